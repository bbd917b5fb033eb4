// hedui web console: the bulletin's print button (no inline handler: the console's
// Content-Security-Policy runs only its own script files).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("print");
  if (button) button.addEventListener("click", () => window.print());
});
