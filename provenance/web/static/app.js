/* Progressive enhancement of the verification form: drag and drop, an upload progress
   bar (XHR) with a Cancel button, a local thumbnail of the chosen file under the
   detector's crops. Without this file the form posts as usual and the server renders
   the same report. The form stays on the page between files, as a fresh form would:
   a sidecar already sent is not sent again with a newly chosen file. */
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
  var cancel = document.getElementById("cancel-button");
  var thumbUrl = null;
  var pending = null; // the upload under way
  var sidecarSent = false; // the chosen sidecar went with a verification already

  function size(n) {
    var units = ["bytes", "KiB", "MiB", "GiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  // A file name's control and bidirectional control characters and lone surrogates,
  // written as escapes ("photo\u202egpj.exe" read "photoexe.jpg"): the server's rule for
  // names it shows, given in data-unsafe (provenance.terminal.shown_line). The "u" flag:
  // its range of surrogates then matches a lone one only, never half of an emoji.
  var unsafe = new RegExp(chosen.getAttribute("data-unsafe") || "[]", "gu");
  function shownName(name) {
    return name.replace(unsafe, function (c) {
      if (c.length > 2) { return c; }  // a subdivision flag (the rule's first part), kept
      var n = c.codePointAt(0);
      if (n >= 0xdc80 && n <= 0xdcff) { n -= 0xdc00; }  // a byte that did not decode
      if (n > 0xffff) { return "\\U" + ("0000000" + n.toString(16)).slice(-8); }  // a Tag
      return n < 0x100 ? "\\x" + ("0" + n.toString(16)).slice(-2)
        : "\\u" + ("000" + n.toString(16)).slice(-4);
    });
  }

  var dropNote = ""; // what a drop of several files did with them (`dropped`)

  function showChosen() {
    var f = file.files && file.files[0];
    chosen.textContent = f ? shownName(f.name) + " (" + size(f.size) + ")" + dropNote : "";
  }

  // A newly chosen file is another verification: the sidecar sent with the last one
  // belonged to that file (sent again with this one, it made an unrelated photo
  // TAMPERED). A sidecar chosen since then stays.
  function fileChosen() {
    if (sidecarSent && sidecar) {
      sidecar.value = "";
      sidecarSent = false;
      var details = sidecar.closest("details");
      if (details) { details.open = false; }
    }
    showChosen();
  }

  file.addEventListener("change", function () { dropNote = ""; fileChosen(); });
  if (sidecar) { sidecar.addEventListener("change", function () { sidecarSent = false; }); }
  ["dragenter", "dragover"].forEach(function (name) {
    drop.addEventListener(name, function (ev) { ev.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    drop.addEventListener(name, function () { drop.classList.remove("over"); });
  });
  // One File as a FileList (what an input's `files` takes); null where DataTransfer
  // cannot be made (an older browser): the drop then keeps the whole list.
  function listOf(f) {
    try {
      var dt = new DataTransfer();
      dt.items.add(f);
      return dt.files;
    } catch (e) {
      return null;
    }
  }

  function isSidecar(f) { return /\.prov$/i.test(f.name); }

  // Several files dropped at once, as a file manager drops a selection: a file with its
  // sidecar (FILE.prov) go in their two fields; of other files the first is verified,
  // and the page says so. Before, the first dropped file went alone: a sidecar dropped
  // with its photo was left out without a word (an edited photo read DERIVED, not
  // TAMPERED), or, dropped first, was itself sent as the file.
  function dropped(files) {
    var media = files.filter(function (f) { return !isSidecar(f); });
    var main = media.length ? media[0] : files[0];
    var own = files.filter(function (f) { return f.name === main.name + ".prov"; });
    var side = own.length ? own[0]
      : (media.length === 1 && files.length === 2 ? files.filter(isSidecar)[0] : null);
    var mainList = listOf(main);
    var sideList = side && sidecar ? listOf(side) : null;
    if (!mainList) { return false; }
    file.files = mainList;
    var others = files.length - 1 - (sideList ? 1 : 0);
    dropNote = (sideList ? " with its sidecar " + shownName(side.name) : "") +
      (others ? "; " + files.length + " files dropped: files are verified one at a time," +
        " so only this one is sent" : "");
    fileChosen();
    if (sideList) {
      sidecar.files = sideList;
      sidecarSent = false;
      var details = sidecar.closest("details");
      if (details) { details.open = true; }
    }
    return true;
  }

  drop.addEventListener("drop", function (ev) {
    ev.preventDefault();
    var files = ev.dataTransfer ? Array.prototype.slice.call(ev.dataTransfer.files) : [];
    if (!files.length) { return; }
    if (files.length > 1 && dropped(files)) { return; }
    dropNote = "";
    file.files = ev.dataTransfer.files;
    fileChosen();
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

  // An answer that is not one of this server's pages (a reverse proxy's 502 or 413
  // page, a refused connection's plain text): an alert saying so, in place of a report.
  function foreignAnswer(xhr, doc) {
    var result = document.createElement("div");
    result.id = "result";
    var alert = document.createElement("div");
    alert.className = "alert";
    alert.setAttribute("role", "alert");
    var title = document.createElement("h2");
    title.className = "alert-title";
    title.textContent = "No report came back";
    // (600 characters: a refusal's page, 421 for a Host not allowed, says its remedy
    // last, some 400 characters in)
    var said = ((doc.body && doc.body.textContent) || xhr.responseText || "")
      .replace(/\s+/g, " ").trim().slice(0, 600);
    // asking again helps a timeout, a rate limit or a server's error, not a refusal
    var again = xhr.status === 408 || xhr.status === 429 || xhr.status >= 500;
    var message = document.createElement("p");
    message.className = "alert-message";
    message.textContent = "The server answered HTTP " + xhr.status +
      (xhr.statusText ? " " + xhr.statusText : "") + " instead of a report" +
      (said ? " (\u201c" + said + "\u201d)" : "") +
      "; nothing was verified." + (again ? " Try again in a moment." : "");
    alert.appendChild(title);
    alert.appendChild(message);
    result.appendChild(alert);
    return result;
  }

  function finish(xhr, f) {
    var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
    var ours = doc.getElementById("result");
    var fresh = ours || foreignAnswer(xhr, doc);
    var old = document.getElementById("result");
    if (old) {
      old.replaceWith(fresh);
    }
    document.querySelectorAll(".intro, .legend").forEach(function (el) { el.remove(); });
    form.classList.add("again");
    var title = form.querySelector(".upload-title");
    if (title) { title.textContent = "Verify another file"; }
    // (asked of `ours`: once moved into this page, `doc` no longer holds it, and the tab
    // kept "Verify a file" after every report)
    if (ours && doc.title) { document.title = doc.title; }
    attachThumbnail(f);
    var heading = document.getElementById("verdict-title") || document.querySelector("#result [role=alert]");
    if (heading) {
      if (!heading.hasAttribute("tabindex")) { heading.setAttribute("tabindex", "-1"); }
      heading.focus();
      heading.scrollIntoView({ block: "start" });
    }
  }

  // The upload ended without an answer: say why, and let the form be used again.
  function stopped(why) {
    pending = null;
    var hadFocus = document.activeElement === cancel;
    button.disabled = false;
    cancel.hidden = true;
    text.textContent = why;
    if (hadFocus) { button.focus(); } // not left on a hidden button
  }

  cancel.addEventListener("click", function () {
    if (pending) { pending.abort(); }
  });

  form.addEventListener("submit", function (ev) {
    var f = file.files && file.files[0];
    if (!f) { return; }
    ev.preventDefault();
    if (pending) { return; }
    var data = new FormData();
    // The sidecar goes first, so the server can relay a large file as it arrives.
    if (sidecar && sidecar.files && sidecar.files[0]) {
      data.append("sidecar", sidecar.files[0]);
      sidecarSent = true;
    }
    data.append("file", f);
    var xhr = new XMLHttpRequest();
    pending = xhr;
    xhr.open("POST", form.getAttribute("action"));
    // a refusal before the page's own code (a Host or cross-site check) then comes as a
    // page, whose text the alert quotes, rather than as the API's JSON
    xhr.setRequestHeader("Accept", "text/html");
    box.hidden = false;
    bar.value = 0;
    var hadFocus = document.activeElement === button;
    button.disabled = true;
    cancel.hidden = false;
    // a disabled button loses the focus (to the page's body): keyboard and screen-reader
    // users go on from the Cancel button instead
    if (hadFocus) { cancel.focus(); }
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
      stopped("");
      box.hidden = true;
      finish(xhr, f);
    });
    xhr.addEventListener("error", function () {
      stopped("The upload failed: the connection to the server was lost; nothing was verified.");
    });
    // the Cancel button, or the browser's Stop (Esc), which aborts the request
    xhr.addEventListener("abort", function () {
      stopped("Upload cancelled: nothing was verified.");
    });
    xhr.send(data);
  });
})();
