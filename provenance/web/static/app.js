/* Progressive enhancement of the verification form: drag and drop, an upload progress
   bar (XHR), a local thumbnail of the chosen file under the detector's crops. Without
   this file the form posts as usual and the server renders the same report. */
(function () {
  "use strict";
  var form = document.getElementById("verify-form");
  if (!form || !window.FormData || !window.XMLHttpRequest || !window.DOMParser) {
    return;
  }
  var file = document.getElementById("file");
  var sidecar = document.getElementById("sidecar");
  var drop = document.getElementById("drop");
  var chosen = document.getElementById("chosen");
  var box = document.getElementById("progress-box");
  var bar = document.getElementById("progress");
  var text = document.getElementById("progress-text");
  var button = document.getElementById("verify-button");
  var thumbUrl = null;

  function size(n) {
    var units = ["bytes", "KiB", "MiB", "GiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function showChosen() {
    var f = file.files && file.files[0];
    chosen.textContent = f ? f.name + " (" + size(f.size) + ")" : "";
  }

  file.addEventListener("change", showChosen);
  ["dragenter", "dragover"].forEach(function (name) {
    drop.addEventListener(name, function (ev) { ev.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    drop.addEventListener(name, function () { drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (ev) {
    ev.preventDefault();
    if (ev.dataTransfer && ev.dataTransfer.files.length) {
      file.files = ev.dataTransfer.files;
      showChosen();
    }
  });

  function attachThumbnail(f) {
    if (!f || !/^image\//.test(f.type)) { return; }
    if (thumbUrl) { URL.revokeObjectURL(thumbUrl); }
    thumbUrl = URL.createObjectURL(f);
    var small = document.querySelector(".verdict-thumb");
    if (small) { small.src = thumbUrl; small.hidden = false; }
    var fig = document.querySelector("[data-crops]");
    if (!fig) { return; }
    var img = fig.querySelector("img.thumb");
    var svg = fig.querySelector("svg.overlay");
    img.addEventListener("load", function () {
      svg.setAttribute("viewBox", "0 0 " + img.naturalWidth + " " + img.naturalHeight);
      img.hidden = false;
      fig.classList.add("has-thumb");
    });
    img.src = thumbUrl;
  }

  function finish(html, f) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var fresh = doc.getElementById("result");
    var old = document.getElementById("result");
    if (fresh && old) {
      old.replaceWith(fresh);
    }
    document.querySelectorAll(".intro, .legend").forEach(function (el) { el.remove(); });
    form.classList.add("again");
    var title = form.querySelector(".upload-title");
    if (title) { title.textContent = "Verify another file"; }
    if (doc.title) { document.title = doc.title; }
    attachThumbnail(f);
    var heading = document.getElementById("verdict-title") || document.querySelector("#result [role=alert]");
    if (heading) {
      if (!heading.hasAttribute("tabindex")) { heading.setAttribute("tabindex", "-1"); }
      heading.focus();
      heading.scrollIntoView({ block: "start" });
    }
  }

  form.addEventListener("submit", function (ev) {
    var f = file.files && file.files[0];
    if (!f) { return; }
    ev.preventDefault();
    var data = new FormData();
    // The sidecar goes first, so the server can relay a large file as it arrives.
    if (sidecar && sidecar.files && sidecar.files[0]) { data.append("sidecar", sidecar.files[0]); }
    data.append("file", f);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.getAttribute("action"));
    box.hidden = false;
    bar.value = 0;
    button.disabled = true;
    text.textContent = "Uploading…";
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) { return; }
      var pct = Math.round((100 * e.loaded) / e.total);
      bar.value = pct;
      text.textContent = pct < 100
        ? "Uploading " + pct + "% (" + size(e.loaded) + " of " + size(e.total) + ")"
        : "Checking against the log…";
    });
    xhr.addEventListener("load", function () {
      button.disabled = false;
      box.hidden = true;
      finish(xhr.responseText, f);
    });
    xhr.addEventListener("error", function () {
      button.disabled = false;
      text.textContent = "The upload failed: the connection to the server was lost.";
    });
    xhr.send(data);
  });
})();
