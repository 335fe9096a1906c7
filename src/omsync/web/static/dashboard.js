// omsync dashboard: optional auto-refresh of the task page and confirmation of stop.
// The pages work without this script; it only adds convenience.
(function () {
  "use strict";
  var KEY = "omsync.autorefresh";
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("autorefresh");
    if (box) {
      var stored = null;
      try { stored = window.localStorage.getItem(KEY); } catch (e) { stored = null; }
      box.checked = stored === "1";
      var timer = null;
      var arm = function () {
        if (timer) { window.clearTimeout(timer); timer = null; }
        if (box.checked) {
          timer = window.setTimeout(function () { window.location.reload(); }, 15000);
        }
      };
      box.addEventListener("change", function () {
        try { window.localStorage.setItem(KEY, box.checked ? "1" : "0"); } catch (e) { /* private mode */ }
        arm();
      });
      arm();
    }
    var forms = document.querySelectorAll("form[data-confirm]");
    Array.prototype.forEach.call(forms, function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  });
})();
