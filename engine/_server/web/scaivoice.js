/**
 * scaivoice.js: the ScaiVoice browser client (protocol v1). No dependencies, no build step.
 *
 * The engine serves this file at `/client/scaivoice.js`. It opens the microphone (echo
 * cancellation, noise suppression and automatic gain on), streams it to a session as 16 kHz
 * PCM16 in 20 ms frames from an AudioWorklet, plays the agent's audio with Web Audio (gapless,
 * dropped at once on `state: interrupted`), tells the server how much of each reply was played
 * (`playback` frames) and dispatches every server frame as a typed event.
 *
 * ```js
 * import { ScaiVoiceClient, mintSessionToken } from "http://127.0.0.1:8765/client/scaivoice.js";
 *
 * const client = new ScaiVoiceClient({
 *   token: async () => (await fetch("/my-backend/voice-token")).text(), // one token per session
 *   config: { voice_id: "hibari:heart", vad_enabled: true },
 * });
 * client.addEventListener("transcript", (e) => e.detail.final && console.log("you:", e.detail.text));
 * client.addEventListener("agent.text", (e) => console.log("agent:", e.detail.delta));
 * talkButton.onclick = () => client.start(); // from a click: browsers start audio on a gesture
 * ```
 *
 * The wire protocol is docs/protocol.md; the guide to this module is docs/browser.md.
 *
 * @module scaivoice
 */

/** The protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

/** The rate and frame length of the microphone audio sent to the server. */
export const INPUT_SAMPLE_RATE = 16000;
export const INPUT_FRAME_MS = 20;

/**
 * The AudioWorklet processors: `scaivoice-capture` (microphone -> 16 kHz PCM16 frames) and
 * `scaivoice-tap` (agent audio passes through; rendered audible samples are counted). Loaded
 * from a Blob URL unless `workletUrl` names a file holding this text (for pages whose
 * Content-Security-Policy refuses `blob:` scripts).
 */
export const WORKLET_SOURCE = `
class ScaiVoiceCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.outRate = o.sampleRate || 16000;
    this.frame = Math.round((this.outRate * (o.frameMs || 20)) / 1000);
    this.ratio = sampleRate / this.outRate; // input samples per output sample
    this.pos = 0;
    this.acc = 0;
    this.accN = 0;
    this.out = new Int16Array(this.frame);
    this.n = 0;
    this.sumSq = 0;
    this.muted = false;
    this.port.onmessage = (e) => {
      if (e.data && "muted" in e.data) this.muted = !!e.data.muted;
    };
  }
  emit(v) {
    if (this.muted) v = 0;
    v = v > 1 ? 1 : v < -1 ? -1 : v;
    this.sumSq += v * v;
    this.out[this.n++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    if (this.n === this.frame) {
      const rms = Math.sqrt(this.sumSq / this.frame);
      this.port.postMessage({ pcm: this.out.buffer, rms }, [this.out.buffer]);
      this.out = new Int16Array(this.frame);
      this.n = 0;
      this.sumSq = 0;
    }
  }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    // Decimation by a box filter: each output sample is the mean of the input samples of its
    // span (a low-pass good enough for speech recognition), any rate ratio.
    for (let i = 0; i < channel.length; i++) {
      this.acc += channel[i];
      this.accN += 1;
      this.pos += 1;
      if (this.pos >= this.ratio) {
        const v = this.acc / this.accN;
        this.acc = 0;
        this.accN = 0;
        while (this.pos >= this.ratio) {
          this.pos -= this.ratio;
          this.emit(v);
        }
      }
    }
    return true;
  }
}

class ScaiVoiceTap extends AudioWorkletProcessor {
  constructor() {
    super();
    this.audible = 0;
    this.reported = 0;
    this.peak = 0;
    this.since = 0;
  }
  process(inputs, outputs) {
    const input = inputs[0];
    const output = outputs[0];
    const channel = input && input[0];
    for (let c = 0; c < output.length; c++) {
      const source = (input && input[c]) || channel;
      if (source) output[c].set(source);
    }
    if (channel) {
      for (let i = 0; i < channel.length; i++) {
        const a = Math.abs(channel[i]);
        if (a > 0.001) this.audible += 1; // louder than -60 dBFS
        if (a > this.peak) this.peak = a;
      }
    }
    this.since += 128;
    if (this.since >= sampleRate / 20 && this.audible !== this.reported) {
      this.port.postMessage({ audible: this.audible, peak: this.peak });
      this.reported = this.audible;
      this.since = 0;
      this.peak = 0;
    }
    return true;
  }
}

registerProcessor("scaivoice-capture", ScaiVoiceCapture);
registerProcessor("scaivoice-tap", ScaiVoiceTap);
`;

/**
 * @typedef {"idle" | "listening" | "thinking" | "speaking" | "interrupted"} ConversationState
 */

/**
 * @typedef {Object} SessionStartedFrame
 * @property {"session.started"} type
 * @property {string} session_id
 * @property {number} protocol
 * @property {Object<string, any>} config the effective session config
 * @property {{input: AudioFormat, output: AudioFormat}} audio
 * @property {{features: string[], wake_words: string[], tools: Object[]}} [capabilities]
 */

/**
 * @typedef {Object} AudioFormat
 * @property {"pcm_s16le"} encoding
 * @property {number} sample_rate
 * @property {number} channels
 */

/**
 * @typedef {Object} StateFrame
 * @property {"state"} type
 * @property {ConversationState} state
 * @property {number | null} turn_id
 */

/**
 * @typedef {Object} TranscriptFrame
 * @property {"transcript"} type
 * @property {number} turn_id
 * @property {string} text
 * @property {boolean} final
 * @property {number} start_ms
 * @property {number} end_ms
 * @property {string} [speaker] with `diarize`
 * @property {string | null} [speaker_id] with `speaker_recognition`
 * @property {number} [speaker_score]
 */

/**
 * @typedef {Object} AgentTextFrame
 * @property {"agent.text"} type
 * @property {number} turn_id
 * @property {string} delta
 */

/**
 * @typedef {Object} AgentTextDoneFrame
 * @property {"agent.text.done"} type
 * @property {number} turn_id
 * @property {string} text
 * @property {boolean} interrupted
 * @property {string} heard_text
 */

/**
 * @typedef {Object} AgentAudioStartFrame
 * @property {"agent.audio.start"} type
 * @property {number} turn_id
 * @property {number} sample_rate
 * @property {"pcm_s16le"} format
 */

/**
 * @typedef {Object} AgentAudioDoneFrame
 * @property {"agent.audio.done"} type
 * @property {number} turn_id
 * @property {number} duration_ms
 * @property {boolean} interrupted
 */

/**
 * @typedef {Object} MetricsFrame
 * @property {"metrics"} type
 * @property {number} turn_id
 * @property {number | null} stt_ms
 * @property {number | null} llm_first_token_ms
 * @property {number | null} tts_first_audio_ms
 * @property {number | null} end_of_turn_to_first_audio_ms
 * @property {number | null} end_of_turn_to_first_text_ms
 * @property {number | null} total_ms
 * @property {number | null} barge_in_ms
 */

/**
 * @typedef {Object} WarningFrame
 * @property {"warning"} type
 * @property {string} code a stable code (docs/protocol.md section 7)
 * @property {string} message
 */

/**
 * @typedef {Object} ErrorFrame
 * @property {"error"} type
 * @property {string} code a stable code (docs/protocol.md section 7)
 * @property {string} message
 * @property {boolean} fatal
 */

/**
 * @typedef {Object} ToolCallFrame
 * @property {"tool.call"} type
 * @property {number} turn_id
 * @property {string} call_id
 * @property {string} name
 * @property {Object<string, any>} arguments
 */

/**
 * @typedef {Object} ToolCancelFrame
 * @property {"tool.cancel"} type
 * @property {string} call_id
 * @property {"interrupted" | "timeout"} reason
 */

/**
 * @typedef {Object} CloseDetail
 * @property {number} code the WebSocket close code (docs/protocol.md section 8)
 * @property {string} reason
 * @property {ErrorFrame | null} error the fatal error that ended the session, if any
 */

/**
 * The events a {@link ScaiVoiceClient} dispatches: each is a `CustomEvent` whose `detail` is
 * the server frame (unknown frame types arrive as `frame` events only).
 *
 * @typedef {Object} ScaiVoiceEventMap
 * @property {CustomEvent<SessionStartedFrame>} session.started
 * @property {CustomEvent<StateFrame>} state
 * @property {CustomEvent<TranscriptFrame>} transcript
 * @property {CustomEvent<AgentTextFrame>} agent.text
 * @property {CustomEvent<AgentTextDoneFrame>} agent.text.done
 * @property {CustomEvent<AgentAudioStartFrame>} agent.audio.start
 * @property {CustomEvent<AgentAudioDoneFrame>} agent.audio.done
 * @property {CustomEvent<MetricsFrame>} metrics
 * @property {CustomEvent<WarningFrame>} warning
 * @property {CustomEvent<ErrorFrame>} error
 * @property {CustomEvent<ToolCallFrame>} tool.call
 * @property {CustomEvent<ToolCancelFrame>} tool.cancel
 * @property {CustomEvent<Object>} session.updated
 * @property {CustomEvent<Object>} session.ended
 * @property {CustomEvent<Object>} wake
 * @property {CustomEvent<Object>} frame every text frame, known or not
 * @property {CustomEvent<{played_ms: number, turn_id: number}>} playback a report sent
 * @property {CustomEvent<{rms: number}>} level the microphone's level, each 20 ms frame
 * @property {CustomEvent<CloseDetail>} close the session's socket closed
 */

/**
 * @typedef {Object} ScaiVoiceOptions
 * @property {string | URL} [server] the engine's base URL (`https://voice.example.com/`);
 *   default: where this module was loaded from.
 * @property {string | (() => string | Promise<string>)} [token] a session token, or a function
 *   that fetches a fresh one from your backend (called once per `start()`): tokens are
 *   single-use. Unset: `apiKey` mints one, else no credential (servers in open mode).
 * @property {string} [apiKey] an API key used to mint the token. Only for development and
 *   trusted pages: a key must never reach an end user's browser.
 * @property {Object<string, any>} [config] session config keys, sent as they are in
 *   `session.start` (`voice_id`, `vad_enabled`, `turn_detection`, `normalize_text`, `speed` ...).
 * @property {boolean} [microphone=true] open the microphone and stream it; `false` for a
 *   text-only client (`sendText`).
 * @property {MediaTrackConstraints} [audio] extra microphone constraints, over the defaults
 *   (`echoCancellation`, `noiseSuppression`, `autoGainControl`: true; one channel).
 * @property {AudioContext} [audioContext] an AudioContext to use (not closed by `stop()`).
 * @property {string} [workletUrl] where to load {@link WORKLET_SOURCE} from instead of a Blob.
 * @property {number} [playbackReportMs=200] how often `playback` reports are sent while a
 *   reply plays.
 * @property {number} [startLeadMs=60] how far ahead the first chunk of a reply (or the next one
 *   after a gap) is scheduled: absorbs network jitter.
 */

/** An error with a stable `code` (a protocol error code, or `connection_failed`). */
export class ScaiVoiceError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "ScaiVoiceError";
    /** @type {string} */
    this.code = code;
  }
}

/** The engine's base URL by default: the folder above `/client/` this module came from. */
function defaultServer() {
  return new URL("..", import.meta.url);
}

/** @param {string | URL | undefined} server */
function baseUrl(server) {
  const url = new URL(server ?? defaultServer(), globalThis.location?.href);
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url;
}

/**
 * @param {Response} response
 * @returns {Promise<ScaiVoiceError>}
 */
async function problem(response) {
  let code = `http_${response.status}`;
  let detail = response.statusText;
  try {
    const doc = await response.json();
    code = doc.code ?? code;
    detail = doc.detail ?? detail;
  } catch {
    // not a problem document
  }
  return new ScaiVoiceError(code, `${response.status}: ${detail}`);
}

/**
 * Mint a single-use session token: `POST /v1/session-tokens`. Call this from your backend with
 * the API key and hand the token to the page; in the page itself only for development.
 *
 * @param {{server?: string | URL, apiKey?: string, ttl_s?: number}} [options]
 * @returns {Promise<{token: string, expires_at: number, expires_in: number, url: string}>}
 * @throws {ScaiVoiceError} with the server's problem `code` (`unauthorized`, `forbidden` ...)
 */
export async function mintSessionToken({ server, apiKey, ttl_s } = {}) {
  /** @type {Record<string, string>} */
  const headers = {};
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  let body;
  if (ttl_s !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify({ ttl_s });
  }
  const response = await fetch(new URL("v1/session-tokens", baseUrl(server)), {
    method: "POST",
    headers,
    body,
  });
  if (!response.ok) throw await problem(response);
  return response.json();
}

/**
 * The voice library: `GET /v1/voices`.
 *
 * @param {{server?: string | URL, apiKey?: string}} [options]
 * @returns {Promise<Array<{id: string, backend: string, name: string, language: string,
 *   sample_rate: number, description: string, default: boolean}>>}
 * @throws {ScaiVoiceError}
 */
export async function listVoices({ server, apiKey } = {}) {
  const headers = apiKey ? { authorization: `Bearer ${apiKey}` } : undefined;
  const response = await fetch(new URL("v1/voices", baseUrl(server)), { headers });
  if (!response.ok) throw await problem(response);
  return (await response.json()).data;
}

/** @returns {{audibleSamples: number, peak: number, firstAudibleAt: number | null, receivedMs: number}} */
function newStats() {
  return { audibleSamples: 0, peak: 0, firstAudibleAt: null, receivedMs: 0 };
}

/** @type {WeakMap<BaseAudioContext, Promise<void>>} */
const workletsLoaded = new WeakMap();

/**
 * @param {BaseAudioContext} context
 * @param {string | undefined} url
 */
function loadWorklets(context, url) {
  let loaded = workletsLoaded.get(context);
  if (!loaded) {
    let moduleUrl = url;
    if (!moduleUrl) {
      moduleUrl = URL.createObjectURL(new Blob([WORKLET_SOURCE], { type: "text/javascript" }));
    }
    loaded = context.audioWorklet.addModule(moduleUrl).finally(() => {
      if (!url) URL.revokeObjectURL(moduleUrl);
    });
    workletsLoaded.set(context, loaded);
  }
  return loaded;
}

/**
 * One agent turn's audio as scheduled: when each chunk starts and how long it is, in the
 * AudioContext's time.
 */
class TurnAudio {
  /**
   * @param {number} turnId
   * @param {number} sampleRate
   */
  constructor(turnId, sampleRate) {
    this.turnId = turnId;
    this.sampleRate = sampleRate;
    /** @type {Array<{start: number, duration: number}>} */
    this.chunks = [];
    /** @type {Set<AudioBufferSourceNode>} */
    this.sources = new Set();
    this.done = false;
    this.reportedMs = -1;
  }

  /** @param {number} now */
  playedMs(now) {
    let played = 0;
    for (const chunk of this.chunks) {
      played += Math.min(Math.max(now - chunk.start, 0), chunk.duration);
    }
    return Math.floor(played * 1000);
  }

  get end() {
    const last = this.chunks[this.chunks.length - 1];
    return last ? last.start + last.duration : 0;
  }
}

/**
 * One conversation with a ScaiVoice engine over the protocol v1 WebSocket.
 *
 * Dispatches the server's frames as `CustomEvent`s named by their `type` (see
 * {@link ScaiVoiceEventMap}), plus `frame` (every text frame), `playback`, `level` and `close`.
 * One client runs one session at a time; `start()` again after `stop()` opens a new one.
 */
export class ScaiVoiceClient extends EventTarget {
  /** @param {ScaiVoiceOptions} [options] */
  constructor(options = {}) {
    super();
    /** @type {ScaiVoiceOptions} */
    this.options = { microphone: true, playbackReportMs: 200, startLeadMs: 60, ...options };
    /** @type {ConversationState | null} the last `state` the server reported */
    this.state = null;
    /** @type {SessionStartedFrame | null} */
    this.session = null;
    /** @type {Object<string, any> | null} the effective session config */
    this.config = null;
    /** @type {AnalyserNode | null} the agent's audio, for meters and visualisations */
    this.outputAnalyser = null;
    this._stats = newStats();
    this._reset();
  }

  _reset() {
    /** @type {WebSocket | null} */
    this._ws = null;
    /** @type {AudioContext | null} */
    this._ctx = null;
    /** @type {MediaStream | null} */
    this._stream = null;
    /** @type {AudioNode[]} */
    this._nodes = [];
    /** @type {AudioWorkletNode | null} */
    this._capture = null;
    /** @type {GainNode | null} */
    this._gain = null;
    /** @type {Map<number, TurnAudio>} */
    this._turns = new Map();
    /** @type {TurnAudio | null} */
    this._audioTurn = null;
    this._nextTime = 0;
    this._reporter = 0;
    this._started = false;
    /** @type {ErrorFrame | null} */
    this._fatal = null;
    /** @type {Promise<CloseDetail> | null} */
    this._closed = null;
  }

  /** Whether a session is open (between `session.started` and the socket's close). */
  get active() {
    return this._started;
  }

  /** The session's id (`sess_...`), once started. */
  get sessionId() {
    return this.session ? this.session.session_id : null;
  }

  /**
   * What the agent's audio did in this page: `audibleSamples` rendered louder than -60 dBFS
   * (counted by a Web Audio tap before the speakers, at `sampleRate`), their `peak` (0-1),
   * `firstAudibleAt` (`performance.now()` when audible audio was first rendered, or null),
   * `receivedMs` of audio received and `queuedMs` scheduled but not played yet.
   */
  get playback() {
    const ctx = this._ctx;
    const queued = ctx && this._turns.size ? Math.max(0, this._nextTime - ctx.currentTime) : 0;
    return {
      ...this._stats,
      queuedMs: queued * 1000,
      sampleRate: ctx ? ctx.sampleRate : null,
    };
  }

  /**
   * Open the microphone and a session. Call it from a user gesture (a click): browsers start
   * audio only then. Resolves with `session.started`.
   *
   * @returns {Promise<SessionStartedFrame>}
   * @throws {ScaiVoiceError} the server refused the session (its error `code`), the socket
   *   could not open (`connection_failed`), or the microphone was refused (`microphone_denied`).
   */
  async start() {
    if (this._ws || this._ctx) throw new ScaiVoiceError("already_started", "a session is open");
    const options = this.options;
    this._stats = newStats();
    const ctx = options.audioContext ?? new AudioContext({ latencyHint: "interactive" });
    this._ctx = ctx;
    try {
      if (ctx.state === "suspended") await ctx.resume();
      await loadWorklets(ctx, options.workletUrl);
      this._buildOutput(ctx);
      if (options.microphone !== false) await this._openMicrophone(ctx);
      const token = await this._token();
      return await this._open(token);
    } catch (error) {
      this._cleanup();
      throw error;
    }
  }

  /**
   * End the session (`session.end`) and release the microphone and audio. Resolves once the
   * socket closed (at most `timeoutMs` after asking).
   *
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<void>}
   */
  async stop({ timeoutMs = 2000 } = {}) {
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      this._stopPlayback();
      if (this._started) ws.send(JSON.stringify({ type: "session.end" }));
      else ws.close(1000);
      let timer = 0;
      const late = new Promise((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      });
      await Promise.race([this._closed, late]);
      clearTimeout(timer);
    }
    if (this._ws) this._ws.close(1000);
    this._cleanup();
  }

  /**
   * Change session config keys (`session.update`); only the keys given change.
   * @param {Object<string, any>} config
   */
  update(config) {
    this.send({ type: "session.update", config });
  }

  /** Stop the agent's reply now (explicit barge-in). */
  interrupt() {
    this._stopPlayback();
    this.send({ type: "interrupt" });
  }

  /**
   * A user turn typed instead of spoken.
   * @param {string} text
   */
  sendText(text) {
    this.send({ type: "text", text });
  }

  /** End the user's turn now (push-to-talk, `turn_detection: "manual"`). */
  commit() {
    this.send({ type: "audio.commit" });
  }

  /**
   * Answer a `tool.call`.
   * @param {string} callId
   * @param {any} result any JSON value
   */
  sendToolResult(callId, result) {
    this.send({ type: "tool.result", call_id: callId, result });
  }

  /**
   * Tell the model a client tool failed.
   * @param {string} callId
   * @param {string} error
   */
  sendToolError(callId, error) {
    this.send({ type: "tool.result", call_id: callId, error });
  }

  /**
   * Silence the microphone (frames of silence keep flowing, so turns still end) or not.
   * @param {boolean} muted
   */
  setMuted(muted) {
    if (this._capture) this._capture.port.postMessage({ muted });
  }

  /**
   * The agent's volume, 0-1 (and beyond).
   * @param {number} volume
   */
  setVolume(volume) {
    if (this._gain) this._gain.gain.value = volume;
  }

  /**
   * Send a client frame as it is.
   * @param {Object<string, any>} frame
   * @throws {ScaiVoiceError} `not_connected` when no socket is open
   */
  send(frame) {
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN) {
      throw new ScaiVoiceError("not_connected", "no session is open");
    }
    this._ws.send(JSON.stringify(frame));
  }

  // ---------------------------------------------------------------- audio graph

  /** @param {AudioContext} ctx */
  _buildOutput(ctx) {
    const gain = ctx.createGain();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    const tap = new AudioWorkletNode(ctx, "scaivoice-tap", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      channelCount: 1,
      channelCountMode: "explicit",
    });
    tap.port.onmessage = (event) => {
      const { audible, peak } = event.data;
      if (audible > 0 && this._stats.firstAudibleAt === null) {
        this._stats.firstAudibleAt = performance.now();
      }
      this._stats.audibleSamples = audible;
      this._stats.peak = Math.max(this._stats.peak, peak);
    };
    gain.connect(analyser);
    analyser.connect(tap);
    tap.connect(ctx.destination);
    this._gain = gain;
    this.outputAnalyser = analyser;
    this._nodes.push(gain, analyser, tap);
  }

  /** @param {AudioContext} ctx */
  async _openMicrophone(ctx) {
    const constraints = {
      echoCancellation: true,
      noiseSuppression: true,
      autoGainControl: true,
      channelCount: 1,
      ...this.options.audio,
    };
    try {
      this._stream = await navigator.mediaDevices.getUserMedia({ audio: constraints });
    } catch (error) {
      throw new ScaiVoiceError("microphone_denied", `the microphone could not open: ${error}`);
    }
    const source = ctx.createMediaStreamSource(this._stream);
    const capture = new AudioWorkletNode(ctx, "scaivoice-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { sampleRate: INPUT_SAMPLE_RATE, frameMs: INPUT_FRAME_MS },
    });
    capture.port.onmessage = (event) => {
      const ws = this._ws;
      if (this._started && ws && ws.readyState === WebSocket.OPEN) ws.send(event.data.pcm);
      this._emit("level", { rms: event.data.rms });
    };
    source.connect(capture);
    this._capture = capture;
    this._nodes.push(source, capture);
  }

  // ---------------------------------------------------------------- the socket

  /** @returns {Promise<string | null>} */
  async _token() {
    const { token, apiKey, server } = this.options;
    if (typeof token === "function") return await token();
    if (typeof token === "string") return token;
    if (apiKey) return (await mintSessionToken({ server, apiKey })).token;
    return null;
  }

  /**
   * @param {string | null} token
   * @returns {Promise<SessionStartedFrame>}
   */
  _open(token) {
    const url = new URL("v1/session", baseUrl(this.options.server));
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (token) url.searchParams.set("token", token);
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    return new Promise((resolve, reject) => {
      this._closed = new Promise((closed) => {
        ws.onclose = (event) => {
          const detail = { code: event.code, reason: event.reason, error: this._fatal };
          const wasStarted = this._started;
          if (this._ws === ws) this._cleanup();
          if (!wasStarted) {
            const error = detail.error;
            reject(
              error
                ? new ScaiVoiceError(error.code, error.message)
                : new ScaiVoiceError("connection_failed", `the socket closed (${event.code})`),
            );
          }
          this._emit("close", detail);
          closed(detail);
        };
      });
      ws.onopen = () => {
        const config = { input_sample_rate: INPUT_SAMPLE_RATE, ...this.options.config };
        ws.send(JSON.stringify({ type: "session.start", protocol: PROTOCOL_VERSION, config }));
      };
      ws.onmessage = (event) => {
        if (typeof event.data === "string") {
          const frame = JSON.parse(event.data);
          if (frame.type === "session.started") {
            this._started = true;
            this.session = frame;
            this.config = frame.config;
            resolve(frame);
          }
          this._onFrame(frame);
        } else {
          this._onAudio(event.data);
        }
      };
    });
  }

  /** @param {any} frame */
  _onFrame(frame) {
    switch (frame.type) {
      case "state":
        this.state = frame.state;
        if (frame.state === "interrupted") this._stopPlayback();
        break;
      case "session.updated":
        this.config = frame.config;
        break;
      case "agent.audio.start": {
        const turn = new TurnAudio(frame.turn_id, frame.sample_rate);
        this._turns.set(turn.turnId, turn);
        this._audioTurn = turn;
        this._startReporting();
        break;
      }
      case "agent.audio.done": {
        const turn = this._turns.get(frame.turn_id);
        if (turn) turn.done = true;
        if (this._audioTurn === turn) this._audioTurn = null;
        break;
      }
      case "error":
        if (frame.fatal) this._fatal = frame;
        break;
    }
    this._emit("frame", frame);
    this._emit(frame.type, frame);
  }

  /**
   * @param {string} type
   * @param {any} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // ---------------------------------------------------------------- playback

  /** @param {ArrayBuffer} data PCM16LE mono at the turn's rate */
  _onAudio(data) {
    const turn = this._audioTurn;
    const ctx = this._ctx;
    if (!turn || !ctx || !this._gain || data.byteLength < 2) return;
    const samples = new Int16Array(data, 0, data.byteLength >> 1);
    const buffer = ctx.createBuffer(1, samples.length, turn.sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this._gain);
    const now = ctx.currentTime;
    if (this._nextTime < now + 0.005) {
      // The first chunk, or the next one after a gap: start a little ahead (jitter).
      this._nextTime = now + (this.options.startLeadMs ?? 60) / 1000;
    }
    source.start(this._nextTime);
    turn.chunks.push({ start: this._nextTime, duration: buffer.duration });
    turn.sources.add(source);
    source.onended = () => turn.sources.delete(source);
    this._nextTime += buffer.duration;
    this._stats.receivedMs += buffer.duration * 1000;
  }

  /** Stop every scheduled chunk at once (barge-in); reports of those turns stop too. */
  _stopPlayback() {
    for (const turn of this._turns.values()) {
      for (const source of turn.sources) {
        try {
          source.stop();
        } catch {
          // not started yet in some engines: disconnecting is enough
        }
        source.disconnect();
      }
      turn.sources.clear();
    }
    this._turns.clear();
    this._audioTurn = null;
    this._nextTime = 0;
    this._stopReporting();
  }

  _startReporting() {
    if (this._reporter) return;
    this._reporter = setInterval(() => this._report(), this.options.playbackReportMs ?? 200);
  }

  _stopReporting() {
    if (this._reporter) clearInterval(this._reporter);
    this._reporter = 0;
  }

  /** Send each playing turn's `played_ms` when it moved; the last one when its audio ended. */
  _report() {
    const ctx = this._ctx;
    const ws = this._ws;
    if (!ctx || !ws || ws.readyState !== WebSocket.OPEN) return;
    const now = ctx.currentTime;
    for (const turn of [...this._turns.values()]) {
      const played = turn.playedMs(now);
      if (played !== turn.reportedMs) {
        turn.reportedMs = played;
        ws.send(JSON.stringify({ type: "playback", turn_id: turn.turnId, played_ms: played }));
        this._emit("playback", { turn_id: turn.turnId, played_ms: played });
      }
      if (turn.done && now >= turn.end) this._turns.delete(turn.turnId);
    }
    if (this._turns.size === 0) this._stopReporting();
  }

  _cleanup() {
    this._stopPlayback();
    for (const node of this._nodes) node.disconnect();
    if (this._stream) for (const track of this._stream.getTracks()) track.stop();
    if (this._ctx && this._ctx !== this.options.audioContext) this._ctx.close();
    const ws = this._ws;
    const closed = this._closed;
    this._reset();
    this._closed = closed;
    this.state = null;
    if (ws && ws.readyState === WebSocket.OPEN) ws.close(1000);
  }
}
