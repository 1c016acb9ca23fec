// Live updates of the programme board: the office service pushes the re-rendered board
// (server-sent events) when it changes; without JavaScript the page is the same, unrefreshed.
(function () {
  "use strict";
  function start() {
    var board = document.querySelector("[data-live]");
    if (!board || !window.EventSource) { return; }
    var status = document.getElementById("live-status");
    var source = new EventSource(board.getAttribute("data-live"));
    function say(text) { if (status) { status.textContent = text; } }
    source.addEventListener("open", function () { say("Live updates on."); });
    source.addEventListener("page", function (event) {
      board.innerHTML = event.data;  // HTML rendered (and escaped) by the server's template
      board.setAttribute("data-version", event.lastEventId);
      say("Updated at " + new Date().toLocaleTimeString("en-GB") + ".");
    });
    source.addEventListener("error", function () { say("Live updates paused: reconnecting."); });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
