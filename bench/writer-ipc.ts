// What one writer process for the workers' SQLite queue would add per message (not a test): the
// cost of carrying each accepted message (its envelope and data) from a worker to another process
// over Node's IPC channel and its verdict back, with `--window` messages in flight as concurrent
// sessions would have, the verdicts answered per event-loop turn as a group commit would. Prints
// the CPU of both processes per message (user + system), without any SQLite work: what the
// writer's commit would cost comes on top. docs/architecture.md ("SQLite with several processes")
// weighs this against each worker's own group commit.
//
//   node --import tsx bench/writer-ipc.ts [--messages 20000] [--window 20] [--size 5400]
//     [--channel advanced|json|frames]
// Channels: Node's IPC with `advanced` serialization (the data a Buffer) or `json` (the data in
// base64), or `frames`: a socket pair of its own carrying length-prefixed frames (the envelope as
// JSON, then the data as it is), the cheapest a writer process could be fed.
import { fork } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { intArg } from './lib/args.ts';

interface Envelope {
  id: number;
  from: string;
  rcpts: string[];
  org: string;
  receivedAt: number;
  inbound: Record<string, unknown>;
}
type Channel = 'advanced' | 'json' | 'frames';

/** Length-prefixed frames off a stream: calls `each` with every whole frame's payload. */
function deframe(sock: net.Socket, each: (frame: Buffer) => void): void {
  let buf: Buffer = Buffer.alloc(0);
  sock.on('data', (c: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, c]) : c;
    let off = 0;
    while (buf.length - off >= 4) {
      const len = buf.readUInt32LE(off);
      if (buf.length - off - 4 < len) break;
      each(buf.subarray(off + 4, off + 4 + len));
      off += 4 + len;
    }
    buf = buf.subarray(off);
  });
}

if (process.env.WRITER_IPC_CHILD) {
  // The writer: takes messages, answers each event-loop turn's batch at once (a group commit's reply).
  const frames = process.env.WRITER_IPC_CHILD === 'frames' ? new net.Socket({ fd: 4 }) : undefined;
  let batch: number[] = [];
  const take = (id: number) => {
    if (!batch.length)
      setImmediate(() => {
        if (frames) {
          const out = Buffer.alloc(4 + 4 * batch.length);
          out.writeUInt32LE(4 * batch.length, 0);
          batch.forEach((id, i) => out.writeUInt32LE(id, 4 + 4 * i));
          frames.write(out);
        } else process.send!({ done: batch });
        batch = [];
      });
    batch.push(id);
  };
  if (frames)
    deframe(frames, (f) => {
      const envLen = f.readUInt32LE(0);
      const env = JSON.parse(f.toString('utf8', 4, 4 + envLen)) as Envelope;
      const data = Buffer.from(f.subarray(4 + envLen)); // the writer keeps its own copy
      if (data.length) take(env.id);
    });
  process.on('message', (m: { env: Envelope; data: Buffer | string } | 'cpu') => {
    if (m === 'cpu') {
      const u = process.cpuUsage();
      process.send!({ cpu: u.user + u.system });
    } else take(m.env.id);
  });
} else {
  const { values: a } = parseArgs({
    options: {
      messages: { type: 'string', default: '20000' },
      window: { type: 'string', default: '20' },
      size: { type: 'string', default: '5400' },
      channel: { type: 'string', default: 'frames' },
    },
    strict: true,
  });
  const N = intArg('messages', a.messages, 1, 1_000_000);
  const W = intArg('window', a.window, 1, 1000);
  const SIZE = intArg('size', a.size, 1, 10_000_000);
  const channel = a.channel as Channel;
  if (!['advanced', 'json', 'frames'].includes(channel))
    throw new Error(`--channel must be advanced, json or frames (got ${a.channel})`);
  const child = fork(fileURLToPath(import.meta.url), [], {
    env: { ...process.env, WRITER_IPC_CHILD: channel },
    execArgv: ['--import', 'tsx'],
    serialization: channel === 'advanced' ? 'advanced' : 'json',
    stdio: ['ignore', 'inherit', 'inherit', 'ipc', 'pipe'],
  });
  const frames = child.stdio[4] as net.Socket;
  const body = Buffer.alloc(SIZE, 0x61);
  const envelope = (id: number): Envelope => ({
    id,
    from: `sender-${id}@fabrikam.test`,
    rcpts: [`r-${id}@contoso.test`],
    org: 'contoso',
    receivedAt: Date.now(),
    inbound: { sessionId: 's', clientIp: '127.0.0.1', helo: 'h', protocol: 'ESMTPS', tls: 'TLSv1.3' },
  });
  const send = (id: number) => {
    const env = envelope(id);
    if (channel === 'frames') {
      const e = Buffer.from(JSON.stringify(env));
      const head = Buffer.alloc(8);
      head.writeUInt32LE(4 + e.length + body.length, 0);
      head.writeUInt32LE(e.length, 4);
      frames.cork();
      frames.write(head);
      frames.write(e);
      frames.write(body);
      process.nextTick(() => frames.uncork());
    } else child.send({ env, data: channel === 'json' ? body.toString('base64') : body });
  };
  let onDone: (n: number) => void = () => {};
  child.on('message', (m: { done?: number[] }) => m.done && onDone(m.done.length));
  deframe(frames, (f) => onDone(f.length / 4));
  const childCpu = () =>
    new Promise<number>((resolve) => {
      const on = (m: { cpu?: number }) => {
        if (m.cpu === undefined) return;
        child.off('message', on);
        resolve(m.cpu);
      };
      child.on('message', on);
      child.send('cpu');
    });
  const run = (count: number) =>
    new Promise<void>((resolve) => {
      let sent = 0;
      let done = 0;
      const more = () => {
        while (sent < count && sent - done < W) send(sent++);
      };
      onDone = (n) => {
        done += n;
        if (done >= count) resolve();
        else more();
      };
      more();
    });
  await run(Math.min(N, 2000)); // warm-up
  const c0 = await childCpu();
  const p0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await run(N);
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const p = process.cpuUsage(p0);
  const c = (await childCpu()) - c0;
  child.disconnect();
  frames.destroy();
  const us = (x: number) => (x / N).toFixed(1);
  console.log(
    `${N} messages of ${SIZE} bytes, ${W} in flight, channel ${channel}: worker ${us(p.user + p.system)} µs CPU ` +
      `per message, writer ${us(c)}, together ${us(p.user + p.system + c)}; ${Math.round(N / (wall / 1000))} messages/s`,
  );
}
