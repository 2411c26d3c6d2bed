// Draws /dashboard's charts with the vendored ECharts from the JSON block the page
// carries (the CSP allows no inline script). Tooltips render on the canvas
// (renderMode "richText"): ECharts' HTML tooltips set style attributes the CSP refuses.
(function () {
  "use strict";
  var PALETTE = ["#2f6fde", "#e0523f", "#2a9d8f", "#f4a261", "#7b61c9", "#6c757d", "#c9a227", "#3aa0c9"];

  function option(el, kind, block) {
    var series = (block.series || []).map(function (s) {
      var one = { name: s.name, data: s.data, type: kind === "line" ? "line" : "bar" };
      if (kind === "stack") one.stack = "total";
      if (kind === "bar") one.barMaxWidth = 28;
      return one;
    });
    // Named bars (advisors, teams) lie flat so long names stay readable on a phone.
    var horizontal = kind === "bar" && el.getAttribute("data-chart") !== "backlog";
    var category = { type: "category", data: block.x, axisLabel: { hideOverlap: true } };
    var value = { type: "value", minInterval: 1 };
    return {
      color: PALETTE,
      animation: false,
      tooltip: { trigger: "axis", renderMode: "richText" },
      legend: { show: series.length > 1, type: "scroll", bottom: 0 },
      grid: { left: 8, right: 16, top: 16, bottom: series.length > 1 ? 40 : 8, containLabel: true },
      xAxis: horizontal ? value : category,
      yAxis: horizontal ? Object.assign({}, category, { inverse: true }) : value,
      series: series,
    };
  }

  function start() {
    var source = document.getElementById("dashboard-data");
    if (!source || !window.echarts) return;
    var data = JSON.parse(source.textContent);
    var charts = [];
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var block = data[el.getAttribute("data-chart")];
      if (!block) return;
      var chart = window.echarts.init(el, null, { renderer: "canvas" });
      chart.setOption(option(el, el.getAttribute("data-kind"), block));
      el.setAttribute("data-drawn", "1");
      charts.push(chart);
    });
    window.addEventListener("resize", function () {
      charts.forEach(function (c) { c.resize(); });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
