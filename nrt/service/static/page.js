/* nrt's listening page. It uses the public HTTP API alone, with paths relative to the page, so
   anything it does, curl can do; audio is fetched as blobs (an <audio> cannot send the token)
   and played, drawn and downloaded from object URLs. */
"use strict";

(() => {
  const TOKEN_KEY = "nrt-token";   // sessionStorage only: gone when the tab closes
  const HISTORY_LIMIT = 12;        // edits kept per clip, newest first
  const POLL_MS = 2000;            // how often a job is asked for
  const MAX_FRAMES = 1600;         // spectrogram columns at most, whatever the clip's length
  const DB_FLOOR = -100;           // dBFS at the bottom of the colour map (0 dBFS at the top)
  const MAGMA = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                 [245, 125, 21], [250, 193, 39], [252, 255, 164]];

  const $ = (id) => document.getElementById(id);
  const players = { input: $("input-audio"), edit: $("edit-audio") };
  const state = {
    clip: null,                 // GET v1/clips/{id}
    input: null,                // {url}
    edit: null,                 // the edit in B: {url, name, settings, scores, n}
    histories: new Map(),       // clip id -> its edits of this session
    specs: {},                  // "input" | "edit" -> {image, spec}
    generation: 0,              // bumped when a clip is chosen: late answers for the last one are dropped
    editing: false,
    uploading: false,
    sequence: false,            // "Play A, then B" is under way
    edits: 0,
  };

  // -- the API ------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, detail) {
      super(detail);
      this.status = status;
      this.code = code;
      this.detail = detail;
    }
  }

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.set("Authorization", `Bearer ${token}`);
    let response;
    try {
      response = await fetch(path, { ...options, headers, cache: "no-store" });
    } catch (err) {
      throw new ApiError(0, "unreachable", `the service did not answer (${err.message}); is it running?`);
    }
    if (response.ok) return response;
    let code = `http_${response.status}`;
    let detail = response.statusText || "the request failed";
    try {
      const body = await response.json();
      code = body.error || code;
      detail = body.detail || detail;
    } catch (_) { /* not JSON: keep the status line */ }
    const error = new ApiError(response.status, code, detail);
    if (response.status === 401) {
      error.quiet = !token;  // no token sent yet: the token form says enough
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      askForToken();
    }
    throw error;
  }

  const clipPath = (id, rest = "") => `v1/clips/${encodeURIComponent(id)}${rest}`;

  // -- messages -----------------------------------------------------------------------------------
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    node.append(...children);
    return node;
  }

  function say(text) {
    $("status").textContent = text;
  }

  function showError(what, err) {
    if (err && err.quiet) return;
    const box = $("alert");
    const text = el("p", {}, el("strong", {}, `${what}: `), err.detail || err.message || String(err));
    if (err.status) text.append(el("span", { class: "code" }, ` (${err.status} ${err.code})`));
    const dismiss = el("button", { type: "button", class: "quiet", "aria-label": "Dismiss the message" }, "Dismiss");
    dismiss.addEventListener("click", clearError);
    box.replaceChildren(text, dismiss);
    box.classList.add("shown");
    say("");
  }

  function clearError() {
    const box = $("alert");
    if (box.contains(document.activeElement)) $("clip-h").focus();
    box.replaceChildren();
    box.classList.remove("shown");
  }

  const fix = (value, digits = 2) => (value === null || value === undefined || Number.isNaN(Number(value))
    ? "–" : Number(value).toFixed(digits));
  const words = (text) => String(text).replace(/_/g, " ");
  const describeStart = (s) => (!s.start || s.start === "noise" ? "from noise"
    : `from ${s.start} at t_start ${fix(s.t_start)}`);
  const describeKeep = (s) => (Number(s.keep_db) > 0 ? ` · keep ${Number(s.keep_db)} dB` : "");
  const describeSettings = (s) => `η ${fix(s.eta)} · ${s.steps} steps · guidance ${Number(s.guidance)} · `
    + `${s.scheduler} · seed ${s.seed} · ${describeStart(s)}${describeKeep(s)}`;

  // -- the token ----------------------------------------------------------------------------------
  function askForToken() {
    const section = $("token-section");
    $("forget-token").hidden = true;
    if (section.hidden) {
      section.hidden = false;
      $("token").focus();
    }
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) {
      $("token").focus();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("token-section").hidden = true;
    $("forget-token").hidden = false;
    clearError();
    loadClips().then((ok) => {
      if (ok && state.clip) chooseClip(state.clip.clip_id);
    });
  });

  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    window.location.reload();  // and with it everything fetched with the token
  });

  // -- the clips ----------------------------------------------------------------------------------
  async function loadHealth() {
    try {
      const health = await (await api("healthz")).json();
      $("service").textContent = `model ${health.model} · nrt ${health.version}`;
    } catch (err) {
      $("service").textContent = "service not reachable";
      showError("The service", err);
    }
  }

  async function loadClips() {
    say("Loading the clips…");
    let clips;
    try {
      clips = (await (await api("v1/clips")).json()).clips;
    } catch (err) {
      showError("Listing the clips failed", err);
      if (err.quiet) say("This service needs its API token.");
      return false;
    }
    $("clip-list").replaceChildren(...clips.map(clipItem));
    $("clips-empty").hidden = clips.length > 0;
    say(`${clips.length} clip${clips.length === 1 ? "" : "s"} in the registry.`);
    return true;
  }

  function clipItem(clip) {
    const button = el("button", { type: "button", class: "clip", "data-clip": clip.clip_id },
      el("span", { class: "id" }, clip.clip_id),
      el("span", { class: "prompt" }, `“${clip.target_prompt}”`),
      el("span", { class: "meta" }, `${words(clip.edit_type)} · best η ${fix(clip.best.eta)}`),
      el("span", { class: "meta" }, `CLAP text ${fix(clip.scores.text, 3)} · audio ${fix(clip.scores.audio, 3)}`
        + ` · sum ${fix(clip.scores.sum, 3)}`));
    if (state.clip && state.clip.clip_id === clip.clip_id) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => chooseClip(clip.clip_id));
    return el("li", {}, button);
  }

  function markChosen() {
    for (const button of document.querySelectorAll("#clip-list .clip")) {
      if (state.clip && button.dataset.clip === state.clip.clip_id) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
  }

  async function chooseClip(id) {
    clearError();
    const generation = ++state.generation;
    say(`Opening clip ${id}…`);
    let clip;
    try {
      clip = await (await api(clipPath(id))).json();
    } catch (err) {
      if (generation === state.generation) showError(`Opening clip ${id} failed`, err);
      return;
    }
    if (generation !== state.generation) return;
    state.clip = clip;
    markChosen();
    showClip(clip);
    $("clip-h").focus();
    loadInput(clip, generation);
  }

  function showClip(clip) {
    $("clip-h").textContent = `Clip ${clip.clip_id}`;
    $("clip-prompt").textContent = `“${clip.target_prompt}”`;
    const scores = clip.scores;
    const facts = [
      ["Edit type", words(clip.edit_type)],
      ["Best settings", describeSettings(clip.best)],
      ["Best CLAP", `text ${fix(scores.text, 3)} · audio ${fix(scores.audio, 3)} · sum ${fix(scores.sum, 3)}`
        + (scores.clap ? ` (${scores.clap})` : "")],
      ["Trials", Object.entries(clip.trials || {}).map(([k, v]) => `${v} ${k}`).join(", ") || "–"],
    ];
    $("clip-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("clap-note").textContent = clip.clap_note || "";
    resetSettings();
    for (const which of ["input", "edit"]) {
      players[which].pause();
      players[which].removeAttribute("src");
      players[which].load();
      state.specs[which] = null;
      render(which);
    }
    $("input-axis").textContent = "Loading the input…";
    state.edit = null;
    showEditControls();
    $("result").replaceChildren();
    renderHistory();
    $("clip-body").hidden = false;
  }

  async function loadInput(clip, generation) {
    let blob;
    try {
      blob = await (await api(clipPath(clip.clip_id, "/input"))).blob();
    } catch (err) {
      if (generation === state.generation) {
        showError(`Loading the input of ${clip.clip_id} failed`, err);
        $("input-axis").textContent = "No input.";
      }
      return;
    }
    if (generation !== state.generation) return;
    if (state.input) URL.revokeObjectURL(state.input.url);
    state.input = { url: URL.createObjectURL(blob) };
    players.input.src = state.input.url;
    say(`Clip ${clip.clip_id}: the input is ready to play.`);
    drawAudio("input", blob, () => generation === state.generation);
  }

  // -- settings and edits -------------------------------------------------------------------------
  function setEta(value) {
    const eta = Math.min(1, Math.max(0, Number(value)));
    $("eta").value = String(eta);
    $("eta-value").value = eta.toFixed(2);
  }

  function applySettings(settings) {
    setEta(settings.eta);
    $("steps").value = settings.steps;
    $("guidance").value = settings.guidance;
    $("seed").value = settings.seed;
    $("scheduler").value = settings.scheduler;
    $("start").value = settings.start || "noise";
    $("t-start").value = settings.t_start;
    $("keep-db").value = settings.keep_db ?? 0;  // an entry from before the setting: off
    showTStart();
  }

  function showTStart() {
    $("t-start").disabled = $("start").value === "noise";  // the noise start has no t_start
  }

  function resetSettings() {
    if (state.clip) applySettings(state.clip.best);
  }

  $("eta").addEventListener("input", () => { $("eta-value").value = Number($("eta").value).toFixed(2); });
  $("eta-value").addEventListener("input", () => {
    const value = $("eta-value").valueAsNumber;
    if (!Number.isNaN(value)) $("eta").value = String(value);  // out of range: the API says so on Edit
  });
  $("start").addEventListener("change", showTStart);
  $("reset").addEventListener("click", () => {
    resetSettings();
    say("Settings back to the clip's best.");
  });

  function editBody() {
    const body = { scores: true, scheduler: $("scheduler").value, start: $("start").value };
    const numbers = [["eta", "eta-value"], ["steps", "steps"], ["guidance", "guidance"], ["seed", "seed"],
                     ["t_start", "t-start"], ["keep_db", "keep-db"]];
    for (const [name, id] of numbers) {
      const input = $(id);
      if (input.disabled) continue;  // absent: the clip's best
      if (input.validity.badInput) throw new Error(`${name} is not a number`);
      if (input.value.trim() !== "") body[name] = Number(input.value);  // empty: the clip's best
    }
    return body;
  }

  $("edit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    requestEdit();
  });

  async function requestEdit() {
    if (!state.clip || state.editing) return;
    clearError();
    let body;
    try {
      body = editBody();
    } catch (err) {
      showError("The edit was not sent", err);
      return;
    }
    const clip = state.clip;
    const generation = state.generation;
    const button = $("edit-button");
    state.editing = true;
    button.textContent = "Editing…";
    button.setAttribute("aria-disabled", "true");
    say(`Editing ${clip.clip_id} at η ${fix(body.eta)}…`);
    try {
      const response = await api(clipPath(clip.clip_id, "/edits"), {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const edit = editOf(clip.clip_id, response.headers, await response.blob());
      remember(clip.clip_id, edit);
      if (generation === state.generation) {
        showEdit(edit);
        say(`Edit ${edit.n} is ready: ${describeSettings(edit.settings)}`
          + (edit.scores ? `, CLAP sum ${fix(edit.scores.sum, 3)}.` : "."));
      }
    } catch (err) {
      if (generation === state.generation) showError(`The edit of ${clip.clip_id} failed`, err);
    } finally {
      state.editing = false;
      button.textContent = "Edit";
      button.removeAttribute("aria-disabled");
    }
  }

  function editOf(clipId, headers, blob) {
    const number = (name) => Number(headers.get(`X-Nrt-${name}`));
    const settings = { eta: number("Eta"), steps: number("Steps"), guidance: number("Guidance"),
                       scheduler: headers.get("X-Nrt-Scheduler"), start: headers.get("X-Nrt-Start"),
                       t_start: number("T-Start"), keep_db: number("Keep-Db"), seed: number("Seed") };
    const scores = headers.has("X-Nrt-Clap-Sum")
      ? { text: number("Clap-Text"), audio: number("Clap-Audio"), sum: number("Clap-Sum"),
          model: headers.get("X-Nrt-Clap-Model") }
      : null;
    const extension = (blob.type || "").includes("flac") ? "flac" : "wav";
    return {
      n: ++state.edits, url: URL.createObjectURL(blob), settings, scores, seconds: number("Edit-Seconds"),
      name: `${clipId}-eta${settings.eta.toFixed(2)}-seed${settings.seed}.${extension}`,
    };
  }

  function remember(clipId, edit) {
    const history = state.histories.get(clipId) || [];
    history.unshift(edit);
    for (const dropped of history.splice(HISTORY_LIMIT)) {
      if (dropped !== state.edit) URL.revokeObjectURL(dropped.url);
    }
    state.histories.set(clipId, history);
  }

  function showEdit(edit) {
    const keep = state.edit;
    state.edit = edit;
    stopSequence();
    players.edit.pause();
    players.edit.src = edit.url;
    if (keep && keep !== edit && !(state.histories.get(state.clip.clip_id) || []).includes(keep)) {
      URL.revokeObjectURL(keep.url);
    }
    const facts = [["Settings used", describeSettings(edit.settings)], ["Took", `${fix(edit.seconds, 1)} s`]];
    if (edit.scores) {
      facts.push(["Text CLAP", fix(edit.scores.text, 3)], ["Audio CLAP", fix(edit.scores.audio, 3)],
                 ["Sum CLAP", `${fix(edit.scores.sum, 3)} (${edit.scores.model})`]);
    }
    $("result").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("edit-cap").replaceChildren(el("b", {}, "B"), ` edit ${edit.n}, η ${fix(edit.settings.eta)}`);
    showEditControls();
    renderHistory();
    $("edit-axis").textContent = "Drawing…";
    drawAudio("edit", null, () => state.edit === edit, edit.url);
  }

  function showEditControls() {
    const edit = state.edit;
    const link = $("download");
    link.hidden = !edit;
    $("play-both").disabled = !edit;
    $("ab-b").disabled = !edit;
    if (edit) {
      link.href = edit.url;
      link.download = edit.name;
      link.textContent = `Download ${edit.name}`;
    } else {
      link.removeAttribute("href");
      $("ab-a").checked = true;
      $("edit-cap").replaceChildren(el("b", {}, "B"), " edit");
      $("edit-axis").textContent = "No edit yet: press Edit.";
    }
    updatePlayButton();
  }

  function renderHistory() {
    const history = state.clip ? state.histories.get(state.clip.clip_id) || [] : [];
    $("history").replaceChildren(...history.map((edit) => {
      const summary = `Edit ${edit.n}: ${describeSettings(edit.settings)}`
        + (edit.scores ? ` · sum ${fix(edit.scores.sum, 3)}` : "");
      const item = el("li", {}, el("span", {}, summary));
      if (edit === state.edit) {
        item.setAttribute("aria-current", "true");
        item.append(el("span", { class: "tag" }, "in B"));
      } else {
        const listen = el("button", { type: "button", class: "quiet", "aria-label": `Put edit ${edit.n} in B` },
          "Put in B");
        listen.addEventListener("click", () => {
          showEdit(edit);
          applySettings(edit.settings);  // the next edit starts from this one's settings
          say(`Edit ${edit.n} is in B, and its settings are in the form.`);
          $("edit-audio").focus();
        });
        item.append(listen);
      }
      return item;
    }));
    $("history-h").hidden = history.length === 0;
  }

  // -- listening ----------------------------------------------------------------------------------
  const side = () => ($("ab-b").checked ? "edit" : "input");
  const other = (which) => (which === "input" ? "edit" : "input");
  const playing = () => !players.input.paused || !players.edit.paused;

  function play(which) {
    players[which].play().catch((err) => {
      if (err.name !== "AbortError") showError("Playback failed", err);
    });
  }

  function stopSequence() {
    if (!state.sequence) return;
    state.sequence = false;
    for (const audio of Object.values(players)) audio.loop = $("loop").checked;
  }

  function updatePlayButton() {
    $("ab-play").textContent = playing() ? "Pause" : `Play ${side() === "input" ? "A" : "B"}`;
  }

  $("play-both").addEventListener("click", () => {
    if (!state.edit) return;
    for (const audio of Object.values(players)) {
      audio.pause();
      audio.loop = false;
    }
    state.sequence = true;
    $("ab-a").checked = true;
    players.input.currentTime = 0;
    play("input");
  });

  for (const which of ["input", "edit"]) {
    const audio = players[which];
    audio.addEventListener("play", () => {
      if (!players[other(which)].paused) players[other(which)].pause();
      $(which === "input" ? "ab-a" : "ab-b").checked = true;
      updatePlayButton();
      requestAnimationFrame(moveHeads);
    });
    audio.addEventListener("pause", () => {
      if (!audio.ended) stopSequence();
      updatePlayButton();
    });
    audio.addEventListener("ended", () => {
      if (!state.sequence) return;
      if (which === "input") {
        players.edit.currentTime = 0;
        play("edit");
      } else if ($("loop").checked) {
        players.input.currentTime = 0;
        play("input");
      } else {
        stopSequence();
      }
    });
    audio.addEventListener("timeupdate", moveHeads);
    audio.addEventListener("emptied", moveHeads);
  }

  for (const radio of [$("ab-a"), $("ab-b")]) {
    radio.addEventListener("change", () => {
      const to = side();
      const from = players[other(to)];
      stopSequence();
      if (!from.paused) {  // A/B: carry on from the same moment on the other side
        const at = from.currentTime;
        from.pause();
        const target = players[to];
        target.currentTime = Number.isFinite(target.duration) ? Math.min(at, target.duration) : at;
        play(to);
      }
      updatePlayButton();
    });
  }

  $("ab-play").addEventListener("click", () => {
    if (playing()) {
      players.input.pause();
      players.edit.pause();
      return;
    }
    play(side());
  });

  $("loop").addEventListener("change", () => {
    if (!state.sequence) for (const audio of Object.values(players)) audio.loop = $("loop").checked;
  });

  function moveHeads() {
    for (const which of ["input", "edit"]) {
      const audio = players[which];
      const head = $(`${which}-head`);
      const known = Number.isFinite(audio.duration) && audio.duration > 0 && state.specs[which];
      head.hidden = !known;
      if (known) head.style.left = `${(100 * audio.currentTime) / audio.duration}%`;
    }
    if (playing()) requestAnimationFrame(moveHeads);
  }

  // -- spectrograms -------------------------------------------------------------------------------
  async function drawAudio(which, blob, current, url) {
    const axis = $(`${which}-axis`);
    try {
      const bytes = await (blob || await (await fetch(url)).blob()).arrayBuffer();
      const rate = sampleRateOf(new DataView(bytes)) || 48000;
      const audio = await new OfflineAudioContext(1, 1, rate).decodeAudioData(bytes);
      if (!current()) return;
      const spec = spectrogram(audio);
      state.specs[which] = { image: paint(spec), spec };
      render(which);
      moveHeads();
      const channels = { 1: "mono", 2: "stereo" }[audio.numberOfChannels] || `${audio.numberOfChannels} channels`;
      axis.textContent = `${fix(audio.duration)} s · ${audio.sampleRate} Hz ${channels} · 0–${fix(spec.nyquist / 1000, 1)}`
        + ` kHz · peak ${spec.peak > 0 ? `${fix(20 * Math.log10(spec.peak), 1)} dBFS` : "silent"}`;
    } catch (err) {
      if (current()) axis.textContent = `No spectrogram: this browser cannot decode the audio (${err.message}).`;
    }
  }

  function sampleRateOf(view) {
    // the file's own rate, so the spectrogram ends at its Nyquist frequency; 0 when unknown
    const tag = (at) => String.fromCharCode(...[0, 1, 2, 3].map((i) => view.getUint8(at + i)));
    let rate = 0;
    if (view.byteLength >= 12 && tag(0) === "RIFF" && tag(8) === "WAVE") {
      for (let at = 12; at + 16 <= view.byteLength; at += 8 + view.getUint32(at + 4, true) + (view.getUint32(at + 4, true) & 1)) {
        if (tag(at) === "fmt ") {
          rate = view.getUint32(at + 12, true);
          break;
        }
      }
    } else if (view.byteLength >= 21 && tag(0) === "fLaC") {  // STREAMINFO: 20 bits at byte 18
      rate = (view.getUint8(18) << 12) | (view.getUint8(19) << 4) | (view.getUint8(20) >> 4);
    }
    return rate >= 3000 && rate <= 384000 ? rate : 0;
  }

  function spectrogram(audio) {
    const n = audio.length;
    const mono = new Float32Array(n);
    let peak = 0;
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const data = audio.getChannelData(c);
      for (let i = 0; i < n; i++) {
        mono[i] += data[i] / audio.numberOfChannels;
        peak = Math.max(peak, Math.abs(data[i]));
      }
    }
    const size = audio.sampleRate >= 32000 ? 1024 : 512;
    const hop = Math.max(size / 4, Math.ceil(n / MAX_FRAMES));
    const frames = Math.max(1, Math.floor(Math.max(0, n - size) / hop) + 1);
    const bins = size / 2;
    const window = new Float32Array(size);
    let windowSum = 0;
    for (let i = 0; i < size; i++) {
      window[i] = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / size);
      windowSum += window[i];
    }
    const re = new Float32Array(size);
    const im = new Float32Array(size);
    const db = new Float32Array(frames * bins);
    for (let f = 0; f < frames; f++) {
      const start = f * hop;
      for (let i = 0; i < size; i++) {
        re[i] = start + i < n ? mono[start + i] * window[i] : 0;
        im[i] = 0;
      }
      fft(re, im);
      for (let k = 0; k < bins; k++) {
        const magnitude = (2 * Math.hypot(re[k], im[k])) / windowSum;  // a full-scale sine: 0 dBFS
        db[f * bins + k] = 20 * Math.log10(magnitude + 1e-12);
      }
    }
    return { frames, bins, db, peak, nyquist: audio.sampleRate / 2 };
  }

  function fft(re, im) {
    // in place, radix 2: bit-reversal permutation, then butterflies
    const n = re.length;
    for (let i = 1, j = 0; i < n; i++) {
      let bit = n >> 1;
      for (; j & bit; bit >>= 1) j ^= bit;
      j ^= bit;
      if (i < j) {
        [re[i], re[j]] = [re[j], re[i]];
        [im[i], im[j]] = [im[j], im[i]];
      }
    }
    for (let length = 2; length <= n; length <<= 1) {
      const half = length >> 1;
      const angle = (-2 * Math.PI) / length;
      for (let k = 0; k < half; k++) {
        const wr = Math.cos(angle * k);
        const wi = Math.sin(angle * k);
        for (let start = 0; start < n; start += length) {
          const a = start + k;
          const b = a + half;
          const tr = re[b] * wr - im[b] * wi;
          const ti = re[b] * wi + im[b] * wr;
          re[b] = re[a] - tr;
          im[b] = im[a] - ti;
          re[a] += tr;
          im[a] += ti;
        }
      }
    }
  }

  const COLOURS = (() => {
    const table = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const at = (i / 255) * (MAGMA.length - 1);
      const low = Math.floor(at);
      const high = Math.min(MAGMA.length - 1, low + 1);
      for (let c = 0; c < 3; c++) table[i * 3 + c] = MAGMA[low][c] + (MAGMA[high][c] - MAGMA[low][c]) * (at - low);
    }
    return table;
  })();

  function paint(spec) {
    const image = new ImageData(spec.frames, spec.bins);
    for (let f = 0; f < spec.frames; f++) {
      for (let k = 0; k < spec.bins; k++) {
        const level = Math.min(1, Math.max(0, (spec.db[f * spec.bins + k] - DB_FLOOR) / -DB_FLOOR));
        const colour = Math.round(level * 255) * 3;
        const pixel = ((spec.bins - 1 - k) * spec.frames + f) * 4;  // low frequencies at the bottom
        image.data[pixel] = COLOURS[colour];
        image.data[pixel + 1] = COLOURS[colour + 1];
        image.data[pixel + 2] = COLOURS[colour + 2];
        image.data[pixel + 3] = 255;
      }
    }
    const canvas = document.createElement("canvas");
    canvas.width = spec.frames;
    canvas.height = spec.bins;
    canvas.getContext("2d").putImageData(image, 0, 0);
    return canvas;
  }

  function render(which) {
    const canvas = $(`${which}-spec`);
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    canvas.height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    const context = canvas.getContext("2d");
    const drawn = state.specs[which];
    if (!drawn) {
      context.clearRect(0, 0, canvas.width, canvas.height);
      return;
    }
    context.imageSmoothingEnabled = true;
    context.drawImage(drawn.image, 0, 0, canvas.width, canvas.height);
  }

  window.addEventListener("resize", () => {
    render("input");
    render("edit");
  });

  // -- uploads and their jobs ---------------------------------------------------------------------
  $("upload-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (state.uploading) return;
    const form = event.currentTarget;
    const data = new FormData(form);
    for (const name of ["mask", "clip_id"]) {
      if (!String(data.get(name) || "").trim()) data.delete(name);  // absent: the service's default
    }
    clearError();
    state.uploading = true;
    $("upload-button").textContent = "Uploading…";
    say("Uploading…");
    try {
      const created = await (await api("v1/clips", { method: "POST", body: data })).json();
      form.reset();
      followJob(created);
    } catch (err) {
      showError("The upload failed", err);
    } finally {
      state.uploading = false;
      $("upload-button").textContent = "Upload";
    }
  });

  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

  async function followJob({ clip_id: clipId, job_id: jobId }) {
    const text = el("p", { id: `job-${jobId}` }, `Clip ${clipId}: queued`);
    const bar = el("progress", { max: "1", "aria-labelledby": `job-${jobId}` });
    const item = el("li", {}, text, bar);
    $("jobs").prepend(item);
    $("job").hidden = false;
    say(`Clip ${clipId} is uploaded: its fit and search are queued.`);
    let misses = 0;
    let last = "";
    for (;;) {
      let job;
      try {
        job = await (await api(`v1/jobs/${encodeURIComponent(jobId)}`)).json();
        misses = 0;
      } catch (err) {
        misses += 1;
        if (err.status === 404 || err.status === 401 || misses >= 5) {
          text.textContent = `Clip ${clipId}: no longer followed`;
          showError(`Following the job of ${clipId} failed`, err);
          return;
        }
        await sleep(POLL_MS * misses);
        continue;
      }
      const progress = job.progress || {};
      let line = `Clip ${clipId}: ${job.state}`;
      if (progress.trials_total) line += ` · trials ${progress.trials_done} of ${progress.trials_total}`;
      if (progress.trials_failed) line += ` (${progress.trials_failed} failed)`;
      if (progress.best_sum !== null && progress.best_sum !== undefined) {
        line += ` · best CLAP sum ${fix(progress.best_sum, 3)}`;
      }
      text.textContent = line;
      if ((job.state === "queued" || job.state === "fitting") && !progress.fraction) bar.removeAttribute("value");
      else bar.value = progress.fraction || 0;
      if (job.state !== last) {
        last = job.state;
        if (job.state !== "done" && job.state !== "failed") say(line);
      }
      if (job.state === "done") {
        const open = el("button", { type: "button", class: "quiet" }, `Open ${clipId}`);
        open.addEventListener("click", () => chooseClip(clipId));
        item.append(open);
        await loadClips();
        say(`Clip ${clipId} is fitted and searched: it is in the list.`);
        return;
      }
      if (job.state === "failed") {
        showError(`The job of ${clipId} failed`, new Error(job.error || "the service gave no reason"));
        await loadClips();
        return;
      }
      await sleep(POLL_MS);
    }
  }

  // -- start ----------------------------------------------------------------------------------------
  $("refresh").addEventListener("click", loadClips);
  $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  loadHealth();
  loadClips();
})();
