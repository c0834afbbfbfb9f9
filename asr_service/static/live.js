// /live: microphone -> 16 kHz PCM16 -> /v1/realtime (OpenAI Realtime, intent=transcription).
// window.asrLive holds what the page saw (the browser test reads it).
(function () {
  "use strict";
  const RATE = 16000;
  const state = window.asrLive = {finals: [], partials: 0, errors: [], status: "idle"};
  let ws = null, context = null, source = null, processor = null, stream = null;
  const partials = {};

  function status(text) {
    state.status = text;
    document.getElementById("status").textContent = text;
  }

  function base64(int16) {
    const bytes = new Uint8Array(int16.buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000)
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(binary);
  }

  function show() {
    const open = Object.entries(partials).map(([, text]) => text).join(" ");
    document.getElementById("partial").textContent = open;
  }

  function onEvent(event) {
    if (event.type === "conversation.item.input_audio_transcription.delta") {
      partials[event.item_id] = (partials[event.item_id] || "") + event.delta;
      state.partials += 1;
      show();
    } else if (event.type === "conversation.item.input_audio_transcription.completed") {
      delete partials[event.item_id];
      state.finals.push(event.transcript);
      const line = document.createElement("span");
      line.className = "final";
      line.textContent = event.transcript;
      document.getElementById("captions").insertBefore(line, document.getElementById("partial"));
      show();
    } else if (event.type === "error") {
      state.errors.push(event.error.code + ": " + event.error.message);
      status("error: " + event.error.message);
    }
  }

  async function start(key) {
    stream = await navigator.mediaDevices.getUserMedia({audio: {channelCount: 1}});
    context = new AudioContext({sampleRate: RATE});  // the browser resamples the microphone
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // Browsers cannot set Authorization on a WebSocket: the key rides as a subprotocol.
    const protocols = ["realtime"].concat(key ? ["openai-insecure-api-key." + key] : []);
    ws = new WebSocket(`${scheme}://${location.host}/v1/realtime?intent=transcription`,
                       protocols);
    ws.onmessage = (m) => onEvent(JSON.parse(m.data));
    ws.onclose = (e) => { status(e.code === 1000 || e.code === 1005 ? "stopped" :
                                 `closed (${e.code} ${e.reason})`); cleanup(); };
    ws.onerror = () => status("connection failed");
    await new Promise((resolve) => { ws.onopen = resolve; });
    ws.send(JSON.stringify({type: "session.update", session: {type: "transcription",
      audio: {input: {format: {type: "audio/pcm", rate: RATE},
                      turn_detection: {type: "server_vad", silence_duration_ms: 500}}}}}));
    source = context.createMediaStreamSource(stream);
    processor = context.createScriptProcessor(2048, 1, 1);  // ~128 ms at 16 kHz
    processor.onaudioprocess = (e) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      const input = e.inputBuffer.getChannelData(0);
      const pcm = new Int16Array(input.length);
      for (let i = 0; i < input.length; i++)
        pcm[i] = Math.max(-32768, Math.min(32767, Math.round(input[i] * 32768)));
      ws.send(JSON.stringify({type: "input_audio_buffer.append", audio: base64(pcm)}));
    };
    source.connect(processor);
    processor.connect(context.destination);
    status("listening");
    document.getElementById("start").disabled = true;
    document.getElementById("stop").disabled = false;
  }

  function cleanup() {
    if (processor) processor.disconnect();
    if (source) source.disconnect();
    if (stream) stream.getTracks().forEach((t) => t.stop());
    if (context) context.close();
    processor = source = stream = context = null;
    document.getElementById("start").disabled = false;
    document.getElementById("stop").disabled = true;
  }

  document.getElementById("start-form").addEventListener("submit", (e) => {
    e.preventDefault();
    status("connecting…");
    start(document.getElementById("key-input").value.trim()).catch((err) => {
      state.errors.push(String(err));
      status("could not start: " + err);
      cleanup();
    });
  });
  document.getElementById("stop").addEventListener("click", () => {
    if (ws) ws.close(1000);
    ws = null;
    cleanup();
    status("stopped");
  });
})();
