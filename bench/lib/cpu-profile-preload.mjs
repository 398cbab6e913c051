// Preload for the gateway process under benchmark (NODE_OPTIONS="--import <this file>"):
// Node 20 refuses --cpu-prof in NODE_OPTIONS, so this starts the V8 sampling profiler through the
// inspector and writes BENCH_CPU_PROF_DIR/gateway-<pid>.cpuprofile when the process exits
// (the gateway exits through process.exit after SIGTERM). Inspector calls on the same thread
// complete synchronously, so writing in the 'exit' handler works.
/* global process */
import inspector from 'node:inspector';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const dir = process.env.BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new inspector.Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: Number(process.env.BENCH_CPU_PROF_INTERVAL_US || 1000) });
  session.post('Profiler.start');
  process.on('exit', () => {
    session.post('Profiler.stop', (err, r) => {
      if (err || !r) return;
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, `gateway-${process.pid}.cpuprofile`), JSON.stringify(r.profile));
    });
  });
}
