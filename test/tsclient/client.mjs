#!/usr/bin/env node
// client.mjs — an MCP client on the official TypeScript SDK for end-to-end
// tests of Gatehouse. It connects over Streamable HTTP, runs a sequence of
// steps, answers the server's sampling, elicitation and roots requests with
// canned answers, and prints one JSON object per step on stdout.
// See README.md for the step language and the output format.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  ResultSchema,
  McpError,
} from '@modelcontextprotocol/sdk/types.js';

const USAGE = `usage: node client.mjs [flags] URL [STEP...]
       node client.mjs [flags] --script FILE|- URL

steps (arguments):
  initialize | ping | tools/list | prompts/list | resources/list
  resources/templates/list | tools/call NAME [ARGS-JSON]
  prompts/get NAME [ARGS-JSON] | resources/read URI
  resources/subscribe URI | resources/unsubscribe URI
  logging/setLevel LEVEL | request METHOD [PARAMS-JSON]
  notify METHOD [PARAMS-JSON] | sleep MS | terminate

flags:
  --script FILE         read the steps from a JSON file ('-' = stdin)
  --token-env NAME      env var holding a bearer token (default GATEHOUSE_TOKEN)
  --header 'K: V'       extra HTTP header on every request (repeatable)
  --timeout MS          per-request timeout (default 30000)
  --client-name NAME    clientInfo.name (default gatehouse-tsclient)
  --sampling-text TEXT  canned sampling answer (default "canned sampling answer")
  --elicitation-action accept|decline|cancel   (default accept)
  --elicitation-fill required|all   which properties the answer fills
                        (default required: required ones and those with a default)
  --elicitation-content JSON   values merged over the generated answer
  --roots JSON          roots/list answer (default [{"uri":"file:///workspace","name":"workspace"}])
  --no-sampling --no-elicitation --no-roots   do not declare that capability
  --no-progress         do not ask for progress on tools/call
  --stop-on-error       stop at the first failed step
  --verbose             log to stderr
exit status: 0 all steps ok, 1 a step failed, 2 usage error`;

function die(msg) {
  process.stderr.write(`client.mjs: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

let opts;
try {
  opts = parseArgs({
    allowPositionals: true,
    options: {
      script: { type: 'string' },
      'token-env': { type: 'string', default: 'GATEHOUSE_TOKEN' },
      header: { type: 'string', multiple: true, default: [] },
      timeout: { type: 'string', default: '30000' },
      'client-name': { type: 'string', default: 'gatehouse-tsclient' },
      'sampling-text': { type: 'string', default: 'canned sampling answer' },
      'elicitation-action': { type: 'string', default: 'accept' },
      'elicitation-content': { type: 'string' },
      'elicitation-fill': { type: 'string', default: 'required' },
      roots: { type: 'string' },
      'no-sampling': { type: 'boolean', default: false },
      'no-elicitation': { type: 'boolean', default: false },
      'no-roots': { type: 'boolean', default: false },
      'no-progress': { type: 'boolean', default: false },
      'stop-on-error': { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
} catch (err) {
  die(err.message);
}
if (opts.values.help) {
  process.stdout.write(USAGE + '\n');
  process.exit(0);
}
const o = opts.values;
const [url, ...stepArgs] = opts.positionals;
if (!url) die('missing URL');
let serverURL;
try {
  serverURL = new URL(url);
} catch {
  die(`bad URL ${url}`);
}
const timeout = Number(o.timeout);
if (!Number.isFinite(timeout) || timeout <= 0) die(`bad --timeout ${o.timeout}`);
if (!['accept', 'decline', 'cancel'].includes(o['elicitation-action'])) die('bad --elicitation-action');
if (!['required', 'all'].includes(o['elicitation-fill'])) die('bad --elicitation-fill');
const log = o.verbose ? (...a) => console.error('client.mjs:', ...a) : () => {};

function parseJSON(text, what) {
  try {
    return JSON.parse(text);
  } catch (err) {
    die(`${what} is not JSON: ${err.message}`);
  }
}
const elicitationOverride = o['elicitation-content'] ? parseJSON(o['elicitation-content'], '--elicitation-content') : {};
const roots = o.roots ? parseJSON(o.roots, '--roots') : [{ uri: 'file:///workspace', name: 'workspace' }];

// ---- steps --------------------------------------------------------------

// Each step is {op, ...fields}; the argument form is translated into it.
function stepsFromArgs(args) {
  const steps = [];
  let i = 0;
  const need = (op) => {
    if (i >= args.length) die(`${op} needs an argument`);
    return args[i++];
  };
  const optJSON = (what) => (i < args.length && /^\s*[{[]/.test(args[i]) ? parseJSON(args[i++], what) : undefined);
  while (i < args.length) {
    const op = args[i++];
    switch (op) {
      case 'initialize':
      case 'ping':
      case 'tools/list':
      case 'prompts/list':
      case 'resources/list':
      case 'resources/templates/list':
      case 'terminate':
        steps.push({ op });
        break;
      case 'tools/call': {
        const name = need(op);
        steps.push({ op, name, arguments: optJSON(`${op} ${name} arguments`) ?? {} });
        break;
      }
      case 'prompts/get': {
        const name = need(op);
        steps.push({ op, name, arguments: optJSON(`${op} ${name} arguments`) });
        break;
      }
      case 'resources/read':
      case 'resources/subscribe':
      case 'resources/unsubscribe':
        steps.push({ op, uri: need(op) });
        break;
      case 'logging/setLevel':
        steps.push({ op, level: need(op) });
        break;
      case 'request':
      case 'notify': {
        const method = need(op);
        steps.push({ op, method, params: optJSON(`${op} ${method} params`) });
        break;
      }
      case 'sleep':
        steps.push({ op, ms: Number(need(op)) });
        break;
      default:
        die(`unknown step ${op}`);
    }
  }
  return steps;
}

function stepsFromScript(file) {
  const text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  const doc = parseJSON(text, `--script ${file}`);
  const steps = Array.isArray(doc) ? doc : doc.steps;
  if (!Array.isArray(steps)) die('a script is a JSON array of steps or {"steps": [...]}');
  for (const s of steps) if (!s || typeof s.op !== 'string') die(`script step without "op": ${JSON.stringify(s)}`);
  return steps;
}

let steps;
if (o.script) {
  if (stepArgs.length) die('give steps either as arguments or with --script, not both');
  steps = stepsFromScript(o.script);
} else {
  steps = stepsFromArgs(stepArgs);
}
if (steps.length === 0) steps = [{ op: 'initialize' }];

// ---- client -------------------------------------------------------------

const headers = {};
for (const h of o.header) {
  const i = h.indexOf(':');
  if (i <= 0) die(`bad --header ${h}`);
  headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
}
const token = process.env[o['token-env']];
if (token) headers.Authorization = `Bearer ${token}`;

const capabilities = {};
if (!o['no-sampling']) capabilities.sampling = {};
if (!o['no-elicitation']) capabilities.elicitation = { form: {}, url: {} };
if (!o['no-roots']) capabilities.roots = { listChanged: true };

const client = new Client({ name: o['client-name'], version: '1.0.0' }, { capabilities });
const transport = new StreamableHTTPClientTransport(serverURL, { requestInit: { headers } });

// What happened during the current step, attached to its output line.
let notifications = [];
let serverRequests = [];

client.fallbackNotificationHandler = async (n) => {
  log('notification', n.method);
  notifications.push({ method: n.method, params: n.params });
};

if (capabilities.sampling) {
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
    serverRequests.push({ method: req.method, params: req.params });
    return {
      role: 'assistant',
      content: { type: 'text', text: o['sampling-text'] },
      model: 'gatehouse-tsclient-canned',
      stopReason: 'endTurn',
    };
  });
}

// cannedValue invents a value that satisfies a primitive schema.
function cannedValue(s) {
  if (!s || typeof s !== 'object') return 'gatehouse';
  if ('default' in s) return s.default;
  if (Array.isArray(s.enum) && s.enum.length) return s.enum[0];
  for (const k of ['oneOf', 'anyOf']) if (Array.isArray(s[k]) && s[k].length && 'const' in s[k][0]) return s[k][0].const;
  switch (s.type) {
    case 'boolean':
      return true;
    case 'integer':
    case 'number':
      return typeof s.minimum === 'number' ? s.minimum : 1;
    case 'array': {
      const n = Math.max(1, s.minItems ?? 1);
      return Array.from({ length: n }, () => cannedValue(s.items)).slice(0, 1);
    }
    default:
      if (s.format === 'email') return 'agent@example.com';
      if (s.format === 'uri') return 'https://example.com/';
      if (s.format === 'date') return '2026-01-01';
      if (s.format === 'date-time') return '2026-01-01T00:00:00Z';
      return 'gatehouse';
  }
}

if (capabilities.elicitation) {
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    serverRequests.push({ method: req.method, params: req.params });
    const action = o['elicitation-action'];
    if (action !== 'accept' || req.params.mode === 'url') return { action };
    const props = req.params.requestedSchema?.properties ?? {};
    const required = new Set(req.params.requestedSchema?.required ?? []);
    const content = {};
    for (const [k, s] of Object.entries(props)) {
      if (o['elicitation-fill'] === 'all' || required.has(k) || (s && 'default' in s)) content[k] = cannedValue(s);
    }
    return { action, content: { ...content, ...elicitationOverride } };
  });
}

if (capabilities.roots) {
  client.setRequestHandler(ListRootsRequestSchema, async (req) => {
    serverRequests.push({ method: req.method, params: req.params });
    return { roots };
  });
}

// ---- running ------------------------------------------------------------

let connected = false;

async function connect() {
  await client.connect(transport, { timeout });
  connected = true;
  return {
    protocolVersion: transport.protocolVersion ?? null,
    sessionId: transport.sessionId ?? null,
    serverInfo: client.getServerVersion() ?? null,
    capabilities: client.getServerCapabilities() ?? null,
    instructions: client.getInstructions() ?? null,
  };
}

function progressOpts(progress) {
  const r = { timeout };
  if (!o['no-progress'] && progress !== false) {
    r.onprogress = (p) => notifications.push({ method: 'notifications/progress', params: p });
  }
  return r;
}

async function listAll(step, fn, key) {
  if (!step.all) return fn(step.cursor ? { cursor: step.cursor } : undefined);
  const items = [];
  let cursor = step.cursor;
  let pages = 0;
  do {
    const page = await fn(cursor ? { cursor } : undefined);
    items.push(...(page[key] ?? []));
    cursor = page.nextCursor;
    pages++;
  } while (cursor && pages < 1000);
  return { [key]: items, pages };
}

async function run(step) {
  const ro = { timeout };
  switch (step.op) {
    case 'initialize':
      if (connected) throw new Error('already initialized');
      return connect();
    case 'ping':
      return client.ping(ro);
    case 'tools/list':
      return listAll(step, (p) => client.listTools(p, ro), 'tools');
    case 'prompts/list':
      return listAll(step, (p) => client.listPrompts(p, ro), 'prompts');
    case 'resources/list':
      return listAll(step, (p) => client.listResources(p, ro), 'resources');
    case 'resources/templates/list':
      return listAll(step, (p) => client.listResourceTemplates(p, ro), 'resourceTemplates');
    case 'tools/call':
      return client.callTool({ name: step.name, arguments: step.arguments ?? {} }, undefined, progressOpts(step.progress));
    case 'prompts/get':
      return client.getPrompt({ name: step.name, ...(step.arguments ? { arguments: step.arguments } : {}) }, ro);
    case 'resources/read':
      return client.readResource({ uri: step.uri }, ro);
    case 'resources/subscribe':
      return client.subscribeResource({ uri: step.uri }, ro);
    case 'resources/unsubscribe':
      return client.unsubscribeResource({ uri: step.uri }, ro);
    case 'logging/setLevel':
      return client.setLoggingLevel(step.level, ro);
    case 'request':
      return client.request({ method: step.method, ...(step.params ? { params: step.params } : {}) }, ResultSchema, progressOpts(step.progress));
    case 'notify':
      await client.notification({ method: step.method, ...(step.params ? { params: step.params } : {}) });
      return {};
    case 'sleep':
      await new Promise((r) => setTimeout(r, step.ms));
      return {};
    case 'terminate':
      await transport.terminateSession();
      return { sessionId: transport.sessionId ?? null };
    default:
      throw new Error(`unknown step ${step.op}`);
  }
}

function describeError(err) {
  const e = { message: err?.message ?? String(err) };
  if (err instanceof McpError) {
    e.code = err.code;
    if (err.data !== undefined) e.data = err.data;
  } else if (err?.name === 'StreamableHTTPError' || err?.constructor?.name === 'StreamableHTTPError') {
    // The SDK reports HTTP failures as StreamableHTTPError with code = status.
    e.httpStatus = err.code;
  } else if (typeof err?.code === 'number') {
    e.code = err.code;
  }
  const m = /HTTP (\d{3})/.exec(e.message);
  if (m && e.httpStatus === undefined) e.httpStatus = Number(m[1]);
  return e;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

let failed = false;
let stepNo = 0;
for (const step of steps) {
  // Every request needs a session first; connect implicitly when the
  // script does not start with initialize.
  if (!connected && step.op !== 'initialize') {
    const res = await runOne({ op: 'initialize', implicit: true });
    if (!res) break;
  }
  if (!(await runOne(step)) && o['stop-on-error']) break;
}

async function runOne(step) {
  const n = stepNo++;
  notifications = [];
  serverRequests = [];
  const t0 = performance.now();
  const out = { step: n, op: step.op, ok: true };
  for (const k of ['name', 'uri', 'method', 'level', 'implicit']) if (step[k] !== undefined) out[k] = step[k];
  let ok = true;
  try {
    out.result = await run(step);
  } catch (err) {
    ok = false;
    out.error = describeError(err);
  }
  out.ok = ok;
  out.ms = Math.round(performance.now() - t0);
  if (notifications.length) out.notifications = notifications;
  if (serverRequests.length) out.serverRequests = serverRequests;
  emit(out);
  if (!ok) failed = true;
  return ok;
}

// Notifications that arrived after the last step go on a closing line.
notifications = [];
serverRequests = [];
await new Promise((r) => setTimeout(r, 50));
const closing = { step: stepNo, op: 'close', ok: true };
const late = notifications;
const lateRequests = serverRequests;
try {
  await client.close();
} catch (err) {
  closing.ok = false;
  closing.error = describeError(err);
}
if (late.length) closing.notifications = late;
if (lateRequests.length) closing.serverRequests = lateRequests;
emit(closing);
process.exit(failed ? 1 : 0);
