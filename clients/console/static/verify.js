// hedui web console: the audit log checked in the browser, with its own code.
//
// RFC 6962 / RFC 9162 Merkle trees (leaf and node hashes, the tree hash, inclusion and
// consistency proofs) and C2SP signed-note checkpoints with Ed25519, through WebCrypto only.
// Written from the RFCs and the C2SP spec, independent of hedui's Python code: the console's
// server hands over bytes (entries, proofs, the signed note and the log's public key in vkey
// form), never a verdict on them.
"use strict";

(function (global) {
  const enc = new TextEncoder();

  function b64decode(text) {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
      throw new Error("not base64: " + text.slice(0, 20));
    }
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function b64encode(bytes) {
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s);
  }

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
    return diff === 0;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  const leafHash = (entry) => sha256(concat(new Uint8Array([0]), entry));
  const nodeHash = (left, right) => sha256(concat(new Uint8Array([1]), left, right));

  // RFC 6962 §2.1: MTH of n leaf hashes; k is the largest power of two smaller than n.
  async function treeHash(leafHashes) {
    const n = leafHashes.length;
    if (n === 0) return sha256(new Uint8Array(0));
    if (n === 1) return leafHashes[0];
    let k = 1;
    while (k * 2 < n) k *= 2;
    return nodeHash(await treeHash(leafHashes.slice(0, k)), await treeHash(leafHashes.slice(k)));
  }

  function checkHashes(hashes) {
    for (const h of hashes) {
      if (h.length !== 32) throw new Error("a hash has " + h.length + " bytes, want 32");
    }
  }

  // RFC 9162 §2.1.3.2: verifying an inclusion proof.
  async function verifyInclusion(leaf, index, size, proof, root) {
    checkHashes([leaf, root, ...proof]);
    if (!(index >= 0 && index < size)) throw new Error("leaf index out of range");
    let fn = index;
    let sn = size - 1;
    let r = leaf;
    for (const p of proof) {
      if (sn === 0) throw new Error("inclusion proof too long");
      if (fn % 2 === 1 || fn === sn) {
        r = await nodeHash(p, r);
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      } else {
        r = await nodeHash(r, p);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new Error("inclusion proof too short");
    if (!equal(r, root)) throw new Error("the computed root differs from the checkpoint's");
  }

  function isPowerOfTwo(n) {  // without 32-bit bitwise operators: sizes may pass 2^31
    while (n > 1 && n % 2 === 0) n /= 2;
    return n === 1;
  }

  // RFC 9162 §2.1.4.2: verifying a consistency proof.
  async function verifyConsistency(size1, size2, proof, root1, root2) {
    checkHashes([root1, root2, ...proof]);
    if (size1 > size2) throw new Error("the first tree is larger than the second");
    if (size1 === size2) {
      if (proof.length !== 0) throw new Error("a proof between equal sizes must be empty");
      if (!equal(root1, root2)) throw new Error("equal sizes with different roots");
      return;
    }
    if (size1 === 0) {
      if (proof.length !== 0) throw new Error("a proof from the empty tree must be empty");
      return;
    }
    if (proof.length === 0) throw new Error("empty consistency proof");
    let path = proof;
    if (isPowerOfTwo(size1)) path = [root1, ...proof];
    let fn = size1 - 1;
    let sn = size2 - 1;
    while (fn % 2 === 1) {
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    let fr = path[0];
    let sr = path[0];
    for (const c of path.slice(1)) {
      if (sn === 0) throw new Error("consistency proof too long");
      if (fn % 2 === 1 || fn === sn) {
        fr = await nodeHash(c, fr);
        sr = await nodeHash(c, sr);
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      } else {
        sr = await nodeHash(sr, c);
      }
      fn = Math.floor(fn / 2);
      sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new Error("consistency proof too short");
    if (!equal(fr, root1)) throw new Error("the proof does not lead to the older root");
    if (!equal(sr, root2)) throw new Error("the proof does not lead to the newer root");
  }

  // C2SP signed-note verifier key: <name>+<key id, 8 hex>+<base64(0x01 ‖ 32-byte Ed25519 key)>.
  async function parseVkey(vkey) {
    // the name holds no "+"; the base64 key may
    const first = vkey.indexOf("+");
    const second = vkey.indexOf("+", first + 1);
    if (first <= 0 || second !== first + 9) throw new Error("malformed verifier key");
    const name = vkey.slice(0, first);
    const idHex = vkey.slice(first + 1, second);
    const keyB64 = vkey.slice(second + 1);
    const key = b64decode(keyB64);
    if (key.length !== 33 || key[0] !== 1) throw new Error("not an Ed25519 verifier key");
    const id = (await sha256(concat(enc.encode(name), new Uint8Array([0x0a]), key))).slice(0, 4);
    if (hex(id) !== idHex) throw new Error("the verifier key's id does not match its key");
    const publicKey = await crypto.subtle.importKey(
      "raw", key.slice(1), { name: "Ed25519" }, false, ["verify"]);
    return { name, id, publicKey };
  }

  // A C2SP checkpoint note: body (origin, size, base64 root, extensions), a blank line, then
  // signature lines "— <name> <base64(key id ‖ signature)>". Returns the parsed body when a
  // signature by the verifier key holds; throws otherwise.
  async function openCheckpoint(noteText, vkey) {
    const verifier = await parseVkey(vkey);
    const split = noteText.lastIndexOf("\n\n");
    if (split < 0 || !noteText.endsWith("\n")) throw new Error("malformed signed note");
    const body = noteText.slice(0, split + 1);
    const sigLines = noteText.slice(split + 2, -1).split("\n");
    let verified = false;
    for (const line of sigLines) {
      const m = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!m) throw new Error("malformed signature line");
      if (m[1] !== verifier.name) continue;
      const sig = b64decode(m[2]);
      if (sig.length !== 68 || !equal(sig.slice(0, 4), verifier.id)) continue;
      verified = await crypto.subtle.verify(
        { name: "Ed25519" }, verifier.publicKey, sig.slice(4), enc.encode(body));
      if (verified) break;
    }
    if (!verified) throw new Error("no valid signature by the log's key on the checkpoint");
    const lines = body.slice(0, -1).split("\n");
    if (lines.length < 3 || !/^(0|[1-9][0-9]*)$/.test(lines[1])) {
      throw new Error("malformed checkpoint body");
    }
    const root = b64decode(lines[2]);
    if (root.length !== 32) throw new Error("checkpoint root is not 32 bytes");
    return { origin: lines[0], size: Number(lines[1]), root, signer: verifier.name };
  }

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin" });
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }

  // The latest signed checkpoint. The log's key comes from the auditor's key directory through
  // the console; this browser pins it on first use and refuses a different one later, and the
  // key's name must be the log's origin (C2SP tlog-checkpoint).
  async function fetchCheckpoint() {
    const cp = await getJSON("/api/checkpoint");
    const pinned = localStorage.getItem("hedui-vkey:" + cp.origin);
    if (pinned !== null && pinned !== cp.vkey) {
      throw new Error("the log's public key differs from the one this browser pinned before");
    }
    const opened = await openCheckpoint(cp.note, cp.vkey);
    if (opened.origin !== cp.origin || opened.signer !== opened.origin) {
      throw new Error("the checkpoint is of another log");
    }
    localStorage.setItem("hedui-vkey:" + cp.origin, cp.vkey);
    return opened;
  }

  // Consistency of the checkpoint with the one this browser verified before (a fork signed by
  // the log's key is caught here); then it becomes the one remembered. Returns the older size.
  async function consistentWithRemembered(cp) {
    const key = "hedui-checkpoint:" + cp.origin;
    const before = JSON.parse(localStorage.getItem(key) || "null");
    let consistent = null;
    if (before && before.size > cp.size) {
      throw new Error("the log is smaller than when this browser last verified it");
    }
    if (before) {
      const proof = await getJSON(
        "/api/proof/consistency?first=" + before.size + "&second=" + cp.size);
      await verifyConsistency(
        before.size, cp.size, proof.hashes.map(b64decode), b64decode(before.root), cp.root);
      consistent = before.size;
    }
    localStorage.setItem(key, JSON.stringify({ size: cp.size, root: b64encode(cp.root) }));
    return consistent;
  }

  // One entry: the checkpoint's signature, then the entry's own bytes hashed here and proven
  // under the checkpoint's root.
  // ``shown``: the entry's bytes as the page shows them (base64), so what is proven is what
  // the auditor reads.
  async function checkEntry(index, shown) {
    const cp = await fetchCheckpoint();
    let bytes = shown;
    if (!bytes) {
      const got = await getJSON("/api/entries?start=" + index + "&end=" + (index + 1));
      if (got.entries.length !== 1) throw new Error("entry " + index + " is not in the log");
      bytes = got.entries[0].entry;
    }
    const leaf = await leafHash(b64decode(bytes));
    const proof = await getJSON("/api/proof/inclusion?index=" + index + "&size=" + cp.size);
    await verifyInclusion(leaf, index, cp.size, proof.hashes.map(b64decode), cp.root);
    const consistent = await consistentWithRemembered(cp);
    return { size: cp.size, root: b64encode(cp.root), leaf: hex(leaf), consistent };
  }

  // The whole log: every entry hashed here and the tree hash compared with the signed root;
  // then consistency with the checkpoint this browser verified before (kept in localStorage).
  async function checkLog(progress) {
    const cp = await fetchCheckpoint();
    const leaves = [];
    const step = 1000;
    for (let start = 0; start < cp.size; start += step) {
      const end = Math.min(cp.size, start + step);
      const got = await getJSON("/api/entries?start=" + start + "&end=" + end);
      if (got.entries.length !== end - start) throw new Error("entries missing from the log");
      for (const e of got.entries) leaves.push(await leafHash(b64decode(e.entry)));
      if (progress) progress(end, cp.size);
    }
    const root = await treeHash(leaves);
    if (!equal(root, cp.root)) {
      throw new Error("the entries do not hash to the signed root: the log was altered");
    }
    const consistent = await consistentWithRemembered(cp);
    return { size: cp.size, root: b64encode(cp.root), origin: cp.origin, consistent };
  }

  global.HeduiVerify = {
    b64decode, b64encode, hex, leafHash, nodeHash, treeHash,
    verifyInclusion, verifyConsistency, openCheckpoint, checkEntry, checkLog,
  };

  // Pages mark their check panels with data-check="entry" (data-index) or data-check="log".
  function show(panel, ok, text) {
    panel.classList.remove("pending", "ok", "bad");
    panel.classList.add(ok ? "ok" : "bad");
    panel.querySelector(".result").textContent = text;
    panel.dataset.result = ok ? "ok" : "bad";
  }

  async function run(panel) {
    const zh = document.documentElement.lang.startsWith("zh");
    try {
      if (panel.dataset.check === "entry") {
        const r = await checkEntry(Number(panel.dataset.index), panel.dataset.entry);
        show(panel, true, (zh ? "✔ 已在浏览器中验证：条目包含在签名树（大小 " : "✔ Verified in this browser: the entry is in the signed tree of size ") +
          r.size + (zh ? "）中，签名有效。" : "), and its signature holds."));
      } else {
        const bar = panel.querySelector("progress");
        const r = await checkLog((done, total) => { if (bar) { bar.max = total; bar.value = done; } });
        const since = r.consistent === null ? "" :
          (zh ? "；与本浏览器上次验证的大小 " + r.consistent + " 一致" : "; consistent with size " + r.consistent + " this browser verified before");
        show(panel, true, (zh ? "✔ 全部 " + r.size + " 条日志在浏览器中重新计算，根哈希与签名检查点一致" : "✔ All " + r.size + " entries hashed in this browser; the root matches the signed checkpoint") + since + (zh ? "。" : "."));
      }
    } catch (e) {
      show(panel, false, (zh ? "✘ 验证失败：" : "✘ Verification FAILED: ") + e.message);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const panel of document.querySelectorAll("[data-check]")) {
      const button = panel.querySelector("button");
      if (button) button.addEventListener("click", () => run(panel));
      if (panel.dataset.auto === "1") run(panel);
    }
  });
})(window);
