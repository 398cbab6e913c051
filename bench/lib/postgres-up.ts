// A throwaway PostgreSQL server for the shell benchmarks (bench/relay.sh STORE=postgres): starts
// one like the tests do (test/helpers/postgres.ts: Debian's binaries, data in a temp folder, a
// loopback address and port of its own, fsync on), creates one database, prints its URL as the
// only line on stdout, then keeps the server until SIGTERM or SIGINT, when it stops it and removes
// its folder. Usage: node --import tsx bench/lib/postgres-up.ts [--host 127.0.0.62]
import { parseArgs } from 'node:util';
import { startPostgres } from '../../test/helpers/postgres.ts';

const { values } = parseArgs({ options: { host: { type: 'string', default: '127.0.0.62' } } });
const pg = await startPostgres({ host: values.host });
const url = await pg.createDatabase('bench');
process.stdout.write(`${url}\n`);
const stop = async (): Promise<void> => {
  await pg.destroy().catch(() => undefined);
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
setInterval(() => undefined, 1 << 30);
