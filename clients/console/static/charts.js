// hedui web console: decisions by district as stacked bars (Chart.js, vendored).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const colours = { ELIGIBLE: "#1a7f37", INELIGIBLE: "#b42318", NEEDS_REVIEW: "#d4a72c" };
  for (const canvas of document.querySelectorAll("canvas[data-chart]")) {
    const data = JSON.parse(canvas.dataset.chart);
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: data.series.map((s) => ({
          label: s.label, data: s.data, backgroundColor: colours[s.decision], stack: "d",
        })),
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: { x: { stacked: true, title: { display: true, text: "区县" } },
                  y: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "次数" } } },
      },
    });
    canvas.dataset.drawn = "1";
  }
});
