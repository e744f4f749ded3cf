/* driftwarden dashboard: draws the drift charts from the page's JSON block with uPlot.
   Values are only ever shown through textContent and uPlot's labels (textContent too). */
(function () {
  "use strict";
  var block = document.getElementById("drift-data");
  var box = document.getElementById("charts");
  var empty = document.getElementById("charts-empty");
  if (!block || !box || typeof uPlot === "undefined") {
    return;
  }
  var data = JSON.parse(block.textContent);
  if (!data.charts || !data.charts.length) {
    return;
  }
  if (empty) {
    empty.parentNode.removeChild(empty);
  }
  var palette = ["#0969da", "#8250df", "#1a7f37", "#bf8700", "#cf222e", "#0550ae", "#6e7781"];
  var plots = [];

  function width(el) {
    return Math.max(280, Math.floor(el.clientWidth || 600) - 8);
  }

  data.charts.forEach(function (c) {
    var card = document.createElement("figure");
    card.className = "chart";
    var cap = document.createElement("figcaption");
    // a p-value and a distance read alike as bare numbers: the caption says which
    var named = c.score && c.score !== "share" ? " " + c.score : "";
    var tests = c.tests.length ? " · " + c.tests.join(", ") + named : "";
    var rule = c.drift_when === "lower" ? "drifts below the threshold" : "drifts above the threshold";
    cap.textContent = c.title + tests + " · " + rule;
    card.appendChild(cap);
    box.appendChild(card);
    var series = [{ label: data.time ? "window end" : "row" }];
    var columns = [data.x];
    c.series.forEach(function (s, i) {
      series.push({
        label: s.version === "" ? (c.score || "score") : "version " + s.version,
        stroke: palette[i % palette.length],
        width: 2,
        spanGaps: true,
        points: { show: data.x.length <= 60 }
      });
      columns.push(s.values);
    });
    series.push({ label: "threshold", stroke: "#6e7781", dash: [6, 4], width: 1.5, spanGaps: true, points: { show: false } });
    columns.push(c.threshold);
    series.push({
      label: "drifted",
      stroke: "#cf222e",
      paths: function () { return null; },
      points: { show: true, size: 8, fill: "#cf222e", stroke: "#cf222e" }
    });
    columns.push(c.drifted);
    var opts = {
      width: width(card),
      height: 190,
      series: series,
      scales: { x: { time: data.time } },
      axes: [{ space: 60 }, { size: 64 }],
      legend: { live: true }
    };
    plots.push(new uPlot(opts, columns, card));
  });

  var pending = null;
  window.addEventListener("resize", function () {
    if (pending) {
      clearTimeout(pending);
    }
    pending = setTimeout(function () {
      plots.forEach(function (p) { p.setSize({ width: width(p.root.parentNode), height: 190 }); });
    }, 150);
  });
  document.body.setAttribute("data-charts", String(plots.length));
})();
