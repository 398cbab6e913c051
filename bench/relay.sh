#!/usr/bin/env bash
# npm run bench:relay — Portcullis vs Postfix through the Postfix comparison harness (a separate,
# read-only folder; see docs/performance.md), TLS in and TLS out, same machine, same run. Postfix
# runs at its best: outbound TLS connection reuse on.
# Env: BENCH_HARNESS=DIR the harness folder (SHARED_BENCH is the older name; default: shared/bench
# beside this checkout); everything compare.sh takes (N, C, SIZE, REPS, CONFIGS, BENCH_WORK …;
# BENCH_WORK defaults to mtabench in $TMPDIR or /tmp); PORTCULLIS_ONLY=1 measures only Portcullis
# (run-target.sh) for quick iterations. WORKERS="1 auto" (default): Portcullis is measured once per
# value of `workers` (serve --workers), labelled portcullis-w1, portcullis-wauto …, each beside the
# same Postfix baseline (measured once, in the first round) and written to one results file.
# INITIAL_CONNECTIONS=N sets delivery.initialConnectionsPerDestination (default: the product's, 5).
# DIRECT=1 (default) also measures the zero-cost relay (generator straight into the sink) and the
# summary sets each relay's CPU per message against it (bench/relay-summary.ts).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
# DANE=1: the sink behind DANE (MX route through a DNSSEC-signed zone) against the same route
# opportunistic, as bench/relay-dane.ts describes (also `npm run bench:relay-dane`).
if [[ ${DANE:-0} == 1 ]]; then exec node --import tsx "$ROOT/bench/relay-dane.ts"; fi
SHARED=${BENCH_HARNESS:-${SHARED_BENCH:-$(dirname "$ROOT")/shared/bench}}
[[ -d $SHARED ]] || { echo "Postfix comparison harness not found at $SHARED (set BENCH_HARNESS=DIR)" >&2; exit 2; }
export BENCH_WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/mtabench}
PORT=${TARGET_PORT:-2600}
bash "$SHARED/setup.sh" >/dev/null
CERTS=$BENCH_WORK/certs
RUN=$BENCH_WORK/portcullis
rm -rf "$RUN" && mkdir -p "$RUN"
cat > "$RUN/portcullis.yaml" <<YAML
# Same job as the harness's Postfix: accept dest.test from loopback clients (STARTTLS offered),
# queue durably, relay to the sink over TLS that must be used (Postfix: smtp_tls_security_level=encrypt).
hostname: relay.portcullis.bench.test
dataDir: $RUN/data
$([[ $EUID == 0 ]] && echo 'runAs: root      # the benchmark runs as root (CI); a real server names its user' || true)
log: { level: ${LOG_LEVEL:-info} }
smtp:
  listen: ["127.0.0.1:$PORT"]
  maxConnectionsPerIP: 1000
tls:
  certificates: [{ cert: $CERTS/server-chain.pem, key: $CERTS/server.key }]
  trust: { system: false, caFiles: [$CERTS/ca.pem] }
$([[ -n ${INITIAL_CONNECTIONS:-} ]] && echo "delivery: { initialConnectionsPerDestination: $INITIAL_CONNECTIONS }" || true)
dns: { servers: ["127.0.0.1:1"] }   # never used: the next hop is numeric
organizations:
  - name: bench
    acceptedDomains: [{ domain: src.test }]
    inboundConnectors:
      - { name: Bench clients, connectorType: onPremises, senderIPAddresses: ["127.0.0.0/8"] }
    outboundConnectors:
      - name: Sink
        recipientDomains: [dest.test]
        useMXRecord: false
        smartHosts: ["127.0.0.1:2526"]
        tlsSettings: encryptionOnly
YAML
DRAIN="bash $ROOT/bench/drain.sh $RUN/portcullis.yaml"
WORKERS=${WORKERS:-"1 auto"}
for w in $WORKERS; do [[ $w =~ ^([0-9]+|auto)$ ]] || { echo "WORKERS: '$w' is not a number or auto" >&2; exit 2; }; done
export RESULTS=${RESULTS:-$BENCH_WORK/results/$(date -u +%Y%m%dT%H%M%SZ)-relay.jsonl}
mkdir -p "$(dirname "$RESULTS")" "$BENCH_WORK/logs"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores; results -> $RESULTS"
# Start Portcullis with `workers: W` in a process group of its own; stopped (SIGTERM to the group) on exit.
start_portcullis() {
  rm -rf "$RUN/data"
  (cd "$RUN" && exec setsid node "$ROOT/bin/portcullis.js" serve -c "$RUN/portcullis.yaml" --workers "$1" \
    > "$BENCH_WORK/logs/target-w$1.log" 2>&1) &
  echo $! > "$RUN/pid"
  for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done
}
stop_portcullis() {
  [[ -s $RUN/pid ]] || return 0
  kill -TERM -- "-$(cat "$RUN/pid")" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$(cat "$RUN/pid")" 2>/dev/null || break; sleep 0.2; done
  : > "$RUN/pid"
}
trap 'stop_portcullis; bash "$SHARED/sink.sh" stop >/dev/null 2>&1 || true' EXIT
first=1
for w in $WORKERS; do
  if [[ ${PORTCULLIS_ONLY:-0} == 1 || $first == 0 ]]; then
    bash "$SHARED/sink.sh" start >/dev/null 2>&1 || true
    start_portcullis "$w"
    NAME=portcullis-w$w TARGET_PORT=$PORT DRAIN_CMD="$DRAIN" \
      CONFIGS=${CONFIGS:-$([[ ${PORTCULLIS_ONLY:-0} == 1 ]] && echo b || echo "b a")} bash "$SHARED/run-target.sh"
    stop_portcullis
  else
    rm -rf "$RUN/data"
    TARGET_NAME=portcullis-w$w TARGET_PORT=$PORT DRAIN_CMD="$DRAIN" KEEP_SINK=1 \
      TARGET_START="node $ROOT/bin/portcullis.js serve -c $RUN/portcullis.yaml --workers $w" \
      PF_EXTRA=${PF_EXTRA:-"smtp_tls_connection_reuse = yes"} bash "$SHARED/compare.sh"
  fi
  first=0
done
# The zero-cost relay: the same generator straight into the sink (same N, C, SIZE, TLS), so that
# the relay's CPU per message can be set against what one SMTP/TLS server plus one client cost.
if [[ ${DIRECT:-1} == 1 ]]; then
  bash "$SHARED/sink.sh" start >/dev/null 2>&1 || true
  NAME=direct TARGET_PORT=2526 DRAIN_CMD= CONFIGS=b bash "$SHARED/run-target.sh" >/dev/null
fi
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ ${PORTCULLIS_ONLY:-0} != 1 ]]; then
  for w in $WORKERS; do
    echo; echo "== portcullis-w$w vs Postfix"
    node "$SHARED/report.js" --compare postfix "portcullis-w$w" "$RESULTS"
  done
else
  node "$SHARED/report.js" "$RESULTS"
fi
node --import tsx "$ROOT/bench/relay-summary.ts" "$RESULTS"
