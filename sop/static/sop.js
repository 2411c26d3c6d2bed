// SOP pages: the builder shows the fields that apply to the chosen trigger and content
// kind (every field stays in the form: without this script all are shown), and the
// results page draws its charts with the vendored ECharts from the page's JSON block
// (the CSP allows no inline script; tooltips draw on the canvas, not as HTML).
(function () {
  "use strict";

  function syncTrigger(panel) {
    var select = panel.querySelector("[data-trigger-select]");
    if (!select) return;
    panel.setAttribute("data-trigger", select.value);
    panel.querySelectorAll("[data-for-trigger]").forEach(function (el) {
      var kinds = el.getAttribute("data-for-trigger").split(" ");
      el.hidden = kinds.indexOf(select.value) < 0;
    });
  }

  function syncKind(step) {
    var select = step.querySelector("[data-kind-select]");
    if (!select) return;
    step.setAttribute("data-kind", select.value);
    step.querySelectorAll("[data-for-kind]").forEach(function (el) {
      var kinds = el.getAttribute("data-for-kind").split(" ");
      el.hidden = kinds.indexOf(select.value) < 0;
    });
  }

  function builder() {
    var form = document.getElementById("builder-form");
    if (!form) return;
    var panel = document.getElementById("trigger-panel");
    if (panel) {
      syncTrigger(panel);
      panel.addEventListener("change", function () { syncTrigger(panel); });
    }
    form.querySelectorAll(".sop-step").forEach(function (step) {
      syncKind(step);
      step.addEventListener("change", function () { syncKind(step); });
    });
    // Byte counters under the texts WeCom limits in bytes.
    form.querySelectorAll("textarea[data-bytes]").forEach(function (area) {
      var limit = parseInt(area.getAttribute("data-bytes"), 10);
      var note = document.createElement("span");
      note.className = "help sop-bytes";
      area.insertAdjacentElement("afterend", note);
      function count() {
        var n = new TextEncoder().encode(area.value).length;
        note.textContent = n + " / " + limit + " 字节（不含变量展开）";
        note.classList.toggle("sop-bad", n > limit);
      }
      area.addEventListener("input", count);
      count();
    });
  }

  var PALETTE = ["#2f6fde", "#2a9d8f", "#f4a261", "#7b61c9", "#e0523f", "#6c757d", "#c9a227"];

  function funnelOption(block) {
    var top = Math.max.apply(null, block.map(function (d) { return d.value; }).concat([1]));
    return {
      color: PALETTE,
      animation: false,
      tooltip: { trigger: "item", renderMode: "richText", formatter: "{b}：{c}" },
      series: [{
        type: "funnel",
        left: 8, top: 8, bottom: 8, width: "58%",
        sort: "none",
        min: 0, max: top, minSize: "4%",
        gap: 2,
        label: { show: true, position: "right", formatter: "{b}  {c}", color: "#1f2733" },
        labelLine: { show: true, length: 12 },
        data: block,
      }],
    };
  }

  function stepsOption(block) {
    return {
      color: PALETTE,
      animation: false,
      tooltip: { trigger: "axis", renderMode: "richText" },
      legend: { type: "scroll", bottom: 0 },
      grid: { left: 8, right: 16, top: 16, bottom: 40, containLabel: true },
      xAxis: { type: "category", data: block.x, axisLabel: { hideOverlap: true } },
      yAxis: { type: "value", minInterval: 1 },
      series: block.series.map(function (s) {
        return { name: s.name, type: "bar", data: s.data, barMaxWidth: 24 };
      }),
    };
  }

  function charts() {
    var source = document.getElementById("sop-chart-data");
    if (!source || !window.echarts) return;
    var data = JSON.parse(source.textContent);
    var drawn = [];
    document.querySelectorAll("[data-sop-chart]").forEach(function (el) {
      var name = el.getAttribute("data-sop-chart");
      var chart = window.echarts.init(el, null, { renderer: "canvas" });
      chart.setOption(name === "funnel" ? funnelOption(data.funnel) : stepsOption(data.steps));
      el.setAttribute("data-drawn", "1");
      drawn.push(chart);
    });
    window.addEventListener("resize", function () {
      drawn.forEach(function (c) { c.resize(); });
    });
  }

  function start() {
    builder();
    charts();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
