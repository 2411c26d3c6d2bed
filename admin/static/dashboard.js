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

  // One funnel per series (a campaign), side by side; the x are the stages, top down.
  // Each funnel is scaled to its own first stage, so a small campaign stays legible.
  function funnelOption(block) {
    var series = (block.series || []).slice(0, 4);
    var width = 100 / Math.max(series.length, 1);
    return {
      color: PALETTE,
      animation: false,
      tooltip: { trigger: "item", renderMode: "richText", formatter: "{a}\n{b}：{c}" },
      legend: { show: true, type: "scroll", bottom: 0, data: block.x },
      title: series.map(function (s, i) {
        return { text: s.name, left: (i * width + width / 2) + "%", top: 0, textAlign: "center",
                 textStyle: { fontSize: 13, fontWeight: 600, color: "#1f2733" } };
      }),
      series: series.map(function (s, i) {
        return {
          name: s.name, type: "funnel", sort: "none", gap: 2, minSize: "6%",
          left: (i * width + width * 0.08) + "%", width: (width * 0.84) + "%", top: 28, bottom: 36,
          min: 0, max: Math.max(s.data[0] || 0, 1),
          label: { show: true, position: "inside", formatter: "{c}", color: "#fff" },
          data: block.x.map(function (stage, j) { return { name: stage, value: s.data[j] }; }),
        };
      }),
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
      var kind = el.getAttribute("data-kind");
      chart.setOption(kind === "funnel" ? funnelOption(block) : option(el, kind, block));
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
