// Progressive enhancement only: every page reads and works without this file.
// 1. Relative times ("in 14 min") stay true while the page is open.
// 2. Ids get a copy button.
"use strict";
(function () {
  var units = [[31536000, "y"], [86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
  function span(seconds) {
    for (var i = 0; i < units.length; i++) {
      var size = units[i][0], name = units[i][1];
      if (seconds >= size) {
        var whole = Math.floor(seconds / size), text = whole + " " + name;
        if (whole < 10 && (name === "h" || name === "min") && units[i + 1][1] !== "s") {
          var part = Math.floor((seconds % size) / units[i + 1][0]);
          if (part) text += " " + part + " " + units[i + 1][1];
        }
        return text;
      }
    }
    return "0 s";
  }
  function relative(instant, now) {
    var delta = Math.round((instant - now) / 1000);
    if (Math.abs(delta) < 5) return "just now";
    return delta > 0 ? "in " + span(delta) : span(-delta) + " ago";
  }
  // The page was rendered on the database's clock ("in 14 min" is what the beat
  // will do); a laptop clock off by minutes must not rewrite it. Keep the
  // server's time, advanced by how long the page has been open.
  var skew = 0;
  function refresh() {
    var now = Date.now() + skew;
    document.querySelectorAll("time[data-relative]").forEach(function (el) {
      var instant = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(instant)) el.textContent = relative(instant, now);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var main = document.getElementById("main");
    var served = main ? Date.parse(main.getAttribute("data-now") || "") : NaN;
    if (!isNaN(served)) skew = served - Date.now();
    refresh();
    setInterval(refresh, 15000);
    if (navigator.clipboard) {
      document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
        button.hidden = false;
        button.addEventListener("click", function () {
          navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
            button.textContent = "copied";
            setTimeout(function () { button.textContent = "copy"; }, 1500);
          });
        });
      });
    }
  });
})();
