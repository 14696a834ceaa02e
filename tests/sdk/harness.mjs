// Test harness for the SDK tests: starts mock upstreams (tests/mock_upstream.py) and the real
// moongate binary on loopback ports, and stops them. Node's standard library only.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const here = dirname(fileURLToPath(import.meta.url));
export const repo = process.env.MG_SOURCE_DIR ?? join(here, '..', '..');
export const bin = process.env.MOONGATE_BIN ?? join(repo, 'build', 'moongate');

function waitLine(stream, pred, what, ms = 10000) {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: stream });
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    rl.on('line', (line) => {
      const v = pred(line);
      if (v !== undefined) { clearTimeout(timer); resolve(v); }
    });
    rl.on('close', () => { clearTimeout(timer); reject(new Error(`${what}: stream closed`)); });
  });
}

// A mock upstream. behavior: the default behaviour object; models: per-model behaviours.
export async function startMock({ name = 'A', behavior, models } = {}) {
  const args = [join(repo, 'tests', 'mock_upstream.py'), '--port', '0', '--name', name];
  if (behavior) args.push('--behavior', JSON.stringify(behavior));
  if (models) args.push('--models', JSON.stringify(models));
  const proc = spawn('python3', args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await waitLine(proc.stdout, (l) => (l.startsWith('READY ') ? Number(l.slice(6)) : undefined), `mock ${name}`);
  return { port, url: `http://127.0.0.1:${port}/v1`, stop: () => proc.kill('SIGKILL') };
}

// The real gateway on a free port, with config (an object written as JSON, which is JSON5 too).
export async function startGateway(config) {
  const dir = mkdtempSync(join(tmpdir(), 'mg-sdk-'));
  const path = join(dir, 'config.json5');
  writeFileSync(path, JSON.stringify(config, null, 2));
  const proc = spawn(bin, ['serve', '--config', path, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'inherit', 'pipe'] });
  const logs = [];
  const port = await waitLine(proc.stderr, (l) => {
    logs.push(l);
    try {
      const j = JSON.parse(l);
      if (j.msg === 'listening') return Number(j.addr.split(':').pop());
    } catch { /* not JSON: kept in logs */ }
    return undefined;
  }, 'moongate to listen');
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    port,
    baseURL: `http://127.0.0.1:${port}/v1`,
    logs,
    async stop() {
      proc.kill('SIGTERM');
      const r = await exited;
      if (r.signal || r.code !== 0) throw new Error(`moongate exited with ${JSON.stringify(r)}\n${logs.join('\n')}`);
      const bad = logs.find((l) => /AddressSanitizer|runtime error:|LeakSanitizer/.test(l));
      if (bad) throw new Error(`sanitizer report: ${bad}`);
    },
  };
}

// A provider block for a mock, in OpenClaw's config language.
export function provider(mock, ids, api = 'openai-completions') {
  return { baseUrl: mock.url, apiKey: 'sk-test', api, models: ids.map((id) => ({ id, contextWindow: 32768, maxTokens: 4096 })) };
}
