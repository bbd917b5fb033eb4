// hedui web console: decisions by district as stacked bars (Chart.js, vendored), the
// districts by their GB/T 2260 names, each chart the width of the page.
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
          label: s.label, data: s.data, backgroundColor: colours[s.decision], stack: "d", maxBarThickness: 72,
        })),
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        // a bar's tooltip names the district in full (province, city, county)
        plugins: { tooltip: { callbacks: { title: (items) => {
          const i = items[0].dataIndex;
          return (data.names && data.names[i]) ? `${data.labels[i]}（${data.names[i]}）` : data.labels[i];
        } } } },
        scales: { x: { stacked: true, title: { display: true, text: "区县" } },
                  y: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "次数" } } },
      },
    });
    canvas.dataset.drawn = "1";
  }
});
