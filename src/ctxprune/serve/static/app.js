// The ctxprune web page: pick a task, a language and a model, upload a file or record one, and show
// the transcript, which modules ran (a layer x module grid), the FLOPs saved and the latency.
//
// Recording: browsers record the microphone as webm/opus (MediaRecorder), which the server does not
// read (it takes wav, flac, ogg and mp3). So the page decodes the recording itself, resamples it to
// 16 kHz mono (what Whisper hears anyway) and uploads a 16-bit PCM WAV it encodes here: no codec on
// either side, and the upload is small (32 kB per second).
"use strict";

const $ = (id) => document.getElementById(id);
const RATE = 16000;
const SIDES = { enc: "Encoder", dec: "Decoder" };

let audio = null; // {kind, blob, name, label}: what the next request uploads
let recorder = null; // the MediaRecorder while recording

function setState(state) {
  document.body.dataset.state = state;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

// ---- /info: models and languages --------------------------------------------------------------

async function loadInfo() {
  try {
    const response = await fetch("/info");
    if (!response.ok) throw new Error(`/info answered ${response.status}`);
    const info = await response.json();
    for (const m of info.models) {
      const label = m.reads_context ? `${m.id} (context-aware)` : m.id;
      $("model").append(el("option", { value: m.id }, label));
    }
    const pruned = info.models.find((m) => m.id !== "dense");
    if (pruned) $("model").value = pruned.id;
    const names = Object.entries(info.languages).sort((a, b) => a[1].localeCompare(b[1]));
    for (const [code, name] of names) {
      const title = name.charAt(0).toUpperCase() + name.slice(1);
      $("language").append(el("option", { value: code }, `${title} (${code})`));
    }
    const limit = `up to ${info.max_upload_mb} MB and ${info.max_audio_s / 60} minutes of audio`;
    document.querySelector('label[for="file"]').title = limit;
    setState("ready");
  } catch (err) {
    showError(`Could not load the server's models: ${err.message}`);
    setState("error");
  }
}

// ---- audio input: a file as-is, or a recording encoded as WAV -----------------------------------

function useAudio(next) {
  audio = next;
  $("source").textContent = next ? next.label : "No audio chosen yet.";
  $("source").dataset.kind = next ? next.kind : "";
  $("submit").disabled = !next;
  const play = $("playback");
  if (play.src) URL.revokeObjectURL(play.src);
  play.hidden = !next || next.kind !== "recording";
  if (next && next.kind === "recording") play.src = URL.createObjectURL(next.blob);
  else play.removeAttribute("src");
}

function onFile() {
  const file = $("file").files[0];
  const label = file && `${file.name} (${kb(file.size)})`;
  if (file) useAudio({ kind: "file", blob: file, name: file.name, label });
  else if (audio?.kind === "file") useAudio(null); // the file was removed; a recording stays
}

async function onRecord() {
  if (recorder) {
    recorder.stop();
    return;
  }
  showError("");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    showError(`No microphone: ${err.message}`);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    recorder = null;
    $("record").textContent = "● Record";
    $("record").classList.remove("recording");
    $("source").textContent = "Encoding the recording…";
    try {
      const wav = await toWav(new Blob(chunks, { type: chunks[0]?.type }));
      const seconds = (wav.size - 44) / 2 / RATE;
      useAudio({ kind: "recording", blob: wav, name: "recording.wav",
        label: `Recording, ${seconds.toFixed(1)} s (16 kHz WAV, ${kb(wav.size)})` });
      $("file").value = "";
    } catch (err) {
      useAudio(null);
      showError(`Could not decode the recording: ${err.message}`);
    }
  };
  recorder.start();
  $("record").textContent = "■ Stop";
  $("record").classList.add("recording");
  $("source").textContent = "Recording…";
  $("submit").disabled = true;
}

async function toWav(blob) {
  const context = new AudioContext();
  let decoded;
  try {
    decoded = await context.decodeAudioData(await blob.arrayBuffer());
  } finally {
    context.close();
  }
  const length = Math.max(1, Math.ceil(decoded.duration * RATE));
  const offline = new OfflineAudioContext(1, length, RATE); // mixes down to mono, resamples
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const rendered = await offline.startRendering();
  return encodeWav(rendered.getChannelData(0), RATE);
}

function encodeWav(samples, rate) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => {
    const s = Math.max(-1, Math.min(1, x));
    view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  });
  return new Blob([view], { type: "audio/wav" });
}

// ---- the request -----------------------------------------------------------------------------

async function onSubmit(event) {
  event.preventDefault();
  if (!audio || document.body.dataset.state === "busy") return;
  const task = $("task").value;
  const form = new FormData();
  form.append("file", audio.blob, audio.name);
  form.append("model", $("model").value);
  form.append("language", $("language").value);
  form.append("response_format", "verbose_json");
  showError("");
  setState("busy");
  $("submit").disabled = true;
  $("submit").textContent = task === "translate" ? "Translating…" : "Transcribing…";
  const started = performance.now();
  try {
    const url = task === "translate" ? "/v1/audio/translations" : "/v1/audio/transcriptions";
    const response = await fetch(url, { method: "POST", body: form });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      throw new Error(body?.error?.message || `the server answered ${response.status}`);
    }
    show(body, (performance.now() - started) / 1000);
    setState("done");
  } catch (err) {
    showError(err.message);
    setState("error");
  } finally {
    $("submit").disabled = !audio;
    updateSubmitLabel();
  }
}

function updateSubmitLabel() {
  $("submit").textContent = $("task").value === "translate" ? "Translate" : "Transcribe";
}

// ---- the answer ------------------------------------------------------------------------------

function show(body, roundTrip) {
  const c = body.ctxprune;
  $("results").hidden = false;
  $("text").textContent = body.text.trim() || "(no speech found)";
  const duration = `${body.duration.toFixed(1)} s`;
  $("meta").textContent = `${c.model} · ${body.task} · ${body.language} · ${duration}`;
  showSegments(body.segments);
  showGrid(c.modules, c.module_ran_share);
  const saved = (1 - c.flops_executed_share) * 100;
  $("flops-saved").textContent = `${saved.toFixed(1)}%`;
  $("flops-bar").style.width = `${Math.min(100, c.flops_executed_share * 100)}%`;
  $("gflops").textContent =
    `${c.gflops_executed.toFixed(1)} of ${c.gflops_dense.toFixed(1)} GFLOPs executed` +
    ` over ${c.windows} window${c.windows === 1 ? "" : "s"}`;
  $("latency").textContent =
    `${c.latency_s.toFixed(2)} s server · ${roundTrip.toFixed(2)} s round trip`;
  $("latency-detail").textContent =
    c.queue_s === undefined ? "" : `of which ${c.queue_s.toFixed(3)} s queued on the server`;
}

function showSegments(segments) {
  const table = $("segments");
  table.replaceChildren();
  for (const s of segments) {
    const row = el("tr");
    row.append(el("td", { class: "time" }, `${clock(s.start)} – ${clock(s.end)}`));
    row.append(el("td", {}, s.text.trim()));
    const share = s.gates ? `${(s.gates.flops_executed_share * 100).toFixed(0)}% FLOPs` : "";
    row.append(el("td", { class: "muted share" }, share));
    table.append(row);
  }
}

// Rows: layers; columns: (side, kind) in the order the modules come, e.g. enc attn, enc ffn, dec
// self_attn, dec cross_attn, dec ffn. Names are "side.layer.kind".
function showGrid(modules, shares) {
  const columns = [];
  const layers = new Set();
  const share = new Map();
  modules.forEach((name, i) => {
    const [side, layer, kind] = name.split(".");
    if (!columns.some((c) => c.side === side && c.kind === kind)) columns.push({ side, kind });
    layers.add(Number(layer));
    share.set(name, shares[i]);
  });
  const table = el("table");
  const head = el("tr");
  head.append(el("th"));
  const groups = el("tr");
  groups.append(el("th"));
  for (const side of new Set(columns.map((c) => c.side))) {
    const span = columns.filter((c) => c.side === side).length;
    groups.append(el("th", { colspan: span, class: "side" }, SIDES[side] || side));
  }
  for (const c of columns) head.append(el("th", { class: "kind" }, c.kind.replace("_", " ")));
  table.append(groups, head);
  for (const layer of [...layers].sort((a, b) => a - b)) {
    const row = el("tr");
    row.append(el("th", { class: "layer" }, `layer ${layer}`));
    for (const c of columns) {
      const name = `${c.side}.${layer}.${c.kind}`;
      if (!share.has(name)) {
        row.append(el("td"));
        continue;
      }
      const s = share.get(name);
      const cell = el("td", { class: "cell", "data-module": name, "data-share": String(s),
        title: `${name}: ran in ${(s * 100).toFixed(0)}% of windows` });
      if (s === 0) cell.classList.add("never");
      else cell.style.setProperty("--share", s);
      if (s > 0.6) cell.classList.add("dark");
      cell.textContent = s === 0 ? "off" : `${Math.round(s * 100)}%`;
      row.append(cell);
    }
    table.append(row);
  }
  $("grid").replaceChildren(table);
}

function clock(seconds) {
  const m = Math.floor(seconds / 60);
  return `${m}:${(seconds - m * 60).toFixed(1).padStart(4, "0")}`;
}

function kb(bytes) {
  if (bytes < 1e3) return `${bytes} bytes`;
  return bytes < 1e6 ? `${(bytes / 1e3).toFixed(0)} kB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

$("file").addEventListener("change", onFile);
$("record").addEventListener("click", onRecord);
$("form").addEventListener("submit", onSubmit);
$("task").addEventListener("change", updateSubmitLabel);
if (!window.MediaRecorder || !navigator.mediaDevices) {
  $("record").disabled = true;
  $("record").title = "this browser cannot record (it needs https or localhost)";
}
loadInfo();
