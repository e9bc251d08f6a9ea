"use strict";
// Filters and search of the us4 review page: plain JavaScript, nothing loaded from elsewhere.
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll("[data-video-id]"));
  var ledger = Array.prototype.slice.call(document.querySelectorAll("tr[data-failed]"));
  var ids = ["f-source", "f-label", "f-split", "f-flag", "f-search"];
  var controls = ids.map(function (id) { return document.getElementById(id); });
  function apply() {
    var v = controls.map(function (c) { return c.value.trim(); });
    var source = v[0], label = v[1], split = v[2], flag = v[3], query = v[4].toLowerCase();
    var shown = 0;
    cards.forEach(function (card) {
      var d = card.dataset;
      var ok = (!source || d.source === source) && (!label || d.label === label) && (!split || d.split === split)
        && (!flag || d.flags.split(" ").indexOf(flag) >= 0) && (!query || d.videoId.toLowerCase().indexOf(query) >= 0);
      card.hidden = !ok;
      if (ok) { shown += 1; }
    });
    var failed = 0;
    ledger.forEach(function (row) {
      // a failed clip has no class nor split: a filter on either, or on another flag, hides it
      var ok = !label && !split && (!flag || flag === "failed") && (!source || row.dataset.source === source)
        && (!query || row.dataset.failed.toLowerCase().indexOf(query) >= 0);
      row.hidden = !ok;
      if (ok) { failed += 1; }
    });
    document.getElementById("f-count").textContent = shown + " of " + cards.length + " clips shown"
      + (ledger.length ? ", " + failed + " of " + ledger.length + " failures" : "");
  }
  controls.forEach(function (c) { c.addEventListener("input", apply); c.addEventListener("change", apply); });
  apply();
})();
