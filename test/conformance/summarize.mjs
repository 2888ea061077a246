#!/usr/bin/env node
// summarize.mjs reads the results of `conformance server ... -o DIR` runs and
// prints per-scenario pass/fail counts, or compares two runs side by side.
// scripts/conformance uses it; it needs nothing outside Node's standard library.
//
//   node summarize.mjs summary DIR [LABEL]
//       Prints "scenario  passed failed" lines and a closing total, writes
//       DIR/summary.json. DIR holds the conformance CLI's result directories
//       (server-<scenario>-<timestamp>/checks.json) and run.log, the CLI's
//       stdout, which tells which scenarios were attempted: an attempted
//       scenario without checks.json (the suite crashed in it) counts as one
//       failed check.
//   node summarize.mjs compare DIRECT_DIR GATEWAY_DIR
//       Prints both summaries side by side. Exits 3 when a scenario that
//       passed directly fails (or is missing) through the gateway.
//
// Counting follows the conformance CLI's own summary: a check counts as
// passed when its status is SUCCESS and as failed when FAILURE; INFO,
// WARNING and SKIPPED checks count as neither. With --requirements the CLI
// also runs scenarios it does not score (extensions, pending); they are
// marked and left out of the closing total, as the CLI leaves them out of
// its verdict.

import fs from 'node:fs';
import path from 'node:path';

const RESULT_DIR = /^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/;

function load(dir) {
  const scenarios = new Map();
  const order = [];
  const see = (name) => {
    if (!scenarios.has(name)) {
      scenarios.set(name, { scenario: name, passed: 0, failed: 0, warnings: 0, skipped: false, failures: [], results: false });
      order.push(name);
    }
    return scenarios.get(name);
  };
  const logPath = path.join(dir, 'run.log');
  let notScoredSection = false;
  if (fs.existsSync(logPath)) {
    for (const line of fs.readFileSync(logPath, 'utf8').split('\n')) {
      let m = line.match(/^Running client scenario '([^']+)' against server/);
      if (m) see(m[1]);
      m = line.match(/^SKIPPED: scenario '([^']+)'/);
      if (m) see(m[1]).skipped = true;
      // With --requirements, the CLI lists scenarios it ran without
      // scoring them: "  ✗ tasks-lifecycle (extension)".
      if (/^Not scored for /.test(line)) notScoredSection = true;
      m = notScoredSection && line.match(/^\s+[✓✗]\s+(\S+)\s+\(([^)]+)\)\s*$/);
      if (m) see(m[1]).notScored = m[2];
    }
  }
  const entries = fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
  for (const e of entries) {
    const m = e.match(RESULT_DIR);
    if (!m) continue;
    const file = path.join(dir, e, 'checks.json');
    if (!fs.existsSync(file)) continue;
    const s = see(m[1]);
    s.results = true;
    let checks;
    try {
      checks = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (err) {
      s.failed++;
      s.failures.push({ id: 'results-unreadable', message: String(err) });
      continue;
    }
    for (const c of checks) {
      if (c.status === 'SUCCESS') s.passed++;
      else if (c.status === 'FAILURE') {
        s.failed++;
        s.failures.push({ id: c.id, message: c.errorMessage ?? c.description ?? '' });
      } else if (c.status === 'WARNING') s.warnings++;
    }
  }
  for (const s of scenarios.values()) {
    if (!s.results && !s.skipped) {
      s.failed++;
      s.failures.push({ id: 'no-results', message: 'the suite wrote no checks.json for this scenario (crashed?)' });
    }
  }
  const list = order.map((n) => scenarios.get(n));
  const sum = (l) => l.reduce((t, s) => ({ passed: t.passed + s.passed, failed: t.failed + s.failed }), { passed: 0, failed: 0 });
  return { scenarios: list, total: sum(list), scored: sum(list.filter((s) => !s.notScored)) };
}

function pad(s, n) {
  s = String(s);
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

function summary(dir, label) {
  const r = load(dir);
  fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify(r, null, 2) + '\n');
  const w = Math.max(8, ...r.scenarios.map((s) => s.scenario.length));
  if (label) console.log(`== ${label}`);
  for (const s of r.scenarios) {
    const mark = s.skipped ? '-' : s.failed ? '✗' : '✓';
    let extra = s.skipped ? '  (skipped)' : s.warnings ? `  (${s.warnings} warnings)` : '';
    if (s.notScored) extra += `  (not scored: ${s.notScored})`;
    console.log(`${mark} ${pad(s.scenario, w)}  ${pad(s.passed, 3)} passed  ${pad(s.failed, 3)} failed${extra}`);
    for (const f of s.failures) console.log(`      ✗ ${f.id}: ${f.message.split('\n')[0].slice(0, 200)}`);
  }
  const ns = r.scenarios.filter((s) => s.notScored).length;
  if (ns) {
    const nsT = { passed: r.total.passed - r.scored.passed, failed: r.total.failed - r.scored.failed };
    console.log(`not scored (${ns} scenarios): ${nsT.passed} passed, ${nsT.failed} failed; scored only below`);
  }
  console.log(`${label ? label + ': ' : ''}${r.scored.passed} passed, ${r.scored.failed} failed`);
  return r;
}

function compare(directDir, gatewayDir) {
  const d = load(directDir);
  const g = load(gatewayDir);
  const gm = new Map(g.scenarios.map((s) => [s.scenario, s]));
  const names = [...d.scenarios.map((s) => s.scenario)];
  for (const s of g.scenarios) if (!names.includes(s.scenario)) names.push(s.scenario);
  const dm = new Map(d.scenarios.map((s) => [s.scenario, s]));
  const w = Math.max(8, ...names.map((n) => n.length));
  const cell = (s) => (!s ? 'absent' : s.skipped ? 'skipped' : `${s.passed}/${s.failed}`);
  console.log(`${pad('scenario', w)}  ${pad('direct P/F', 12)}  ${pad('gateway P/F', 12)}  verdict`);
  const regressions = [];
  for (const n of names) {
    const a = dm.get(n);
    const b = gm.get(n);
    let verdict = 'same';
    const aPass = a && !a.skipped && a.failed === 0;
    const bPass = b && !b.skipped && b.failed === 0;
    if (aPass && !bPass) {
      verdict = 'REGRESSION';
      regressions.push(n);
    } else if (!aPass && bPass) verdict = 'fixed by gateway?';
    else if (a && b && (a.passed !== b.passed || a.failed !== b.failed)) verdict = 'differs';
    console.log(`${pad(n, w)}  ${pad(cell(a), 12)}  ${pad(cell(b), 12)}  ${verdict}`);
    if (verdict === 'REGRESSION' && b) for (const f of b.failures) console.log(`${' '.repeat(w)}    ✗ ${f.id}: ${f.message.split('\n')[0].slice(0, 200)}`);
  }
  console.log(`direct: ${d.total.passed} passed, ${d.total.failed} failed; gateway: ${g.total.passed} passed, ${g.total.failed} failed`);
  if (regressions.length) {
    console.log(`regressions through the gateway (${regressions.length}): ${regressions.join(', ')}`);
    return 3;
  }
  return 0;
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'summary' && args.length >= 1) {
  summary(args[0], args[1]);
} else if (cmd === 'compare' && args.length === 2) {
  process.exitCode = compare(args[0], args[1]);
} else {
  console.error('usage: summarize.mjs summary DIR [LABEL] | compare DIRECT_DIR GATEWAY_DIR');
  process.exitCode = 2;
}
