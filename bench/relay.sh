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
# STORE="sqlite postgres" (default sqlite): each store in turn; PostgreSQL is a throwaway server
# (bench/lib/postgres-up.ts: Debian's server on 127.0.0.62, fsync on; PORTCULLIS_STORE_URL set: that
# database instead, e.g. a server with pg_stat_statements), labels portcullis-pg-….
# NODES="1 2" (default 1; above 1 on PostgreSQL only): also K gateway nodes on that database, node i
# listening on 127.0.0.1:PORT+i-1, the generator's sessions and messages spread evenly over them
# (bench/lib/split-client.mjs), labelled portcullis-pg-nK-wW. With Postfix measured
# (PORTCULLIS_ONLY unset), the first NODES value must be 1 (Postfix runs in the first round).
# WARMUP=M (default: N, the measured run's size): messages sent to each target before its measured
# runs (the harness's own default is 200). A gateway runs for days; after 200 messages V8 is still
# optimising it, and in a first measured run of 5,000 the compiler spent 1.3 s of the process's CPU
# (node --trace-opt), about a third of the run's relay CPU. The same warm-up goes to every target
# (Postfix, each Portcullis, the zero-cost relay's sink); WARMUP=200 measures the cold gateway.
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
STORES=${STORE:-sqlite}
NODES=${NODES:-1}
for st in $STORES; do [[ $st == sqlite || $st == postgres ]] || { echo "STORE: '$st' is not sqlite or postgres" >&2; exit 2; }; done
for n in $NODES; do [[ $n =~ ^[1-5]$ ]] || { echo "NODES: '$n' is not 1 to 5" >&2; exit 2; }; done
if [[ ${PORTCULLIS_ONLY:-0} != 1 && ${NODES%% *} != 1 ]]; then
  echo "NODES must start with 1 when Postfix is measured (it runs in the first round)" >&2; exit 2
fi
PG_PID=
if [[ " $STORES " == *" postgres "* && -z ${PORTCULLIS_STORE_URL:-} ]]; then
  # The URL (password included) reaches the gateway through the environment, never a file.
  coproc PG { exec node --import tsx "$ROOT/bench/lib/postgres-up.ts"; }
  read -r -t 120 -u "${PG[0]}" PORTCULLIS_STORE_URL || { echo "the throwaway PostgreSQL did not start" >&2; exit 1; }
  export PORTCULLIS_STORE_URL
fi
# cfg_of STORE I: the config of node I on STORE (listens on 127.0.0.1:PORT+I-1, data in data.STORE.I;
# the admin centre on node 1 only). The harness's certificate names 127.0.0.1: one address, ports apart.
cfg_of() { echo "$RUN/$1-node$2.yaml"; }
write_config() {
  local delivery=()
  [[ -z ${INITIAL_CONNECTIONS:-} ]] || delivery+=("initialConnectionsPerDestination: $INITIAL_CONNECTIONS")
  # On PostgreSQL a node with local domains must be told that its mailboxes are shared (they are
  # not used here: every recipient is relayed).
  [[ $1 != postgres ]] || delivery+=("maildirShared: true")
  cat > "$(cfg_of "$1" "$2")" <<YAML
# Same job as the harness's Postfix: accept dest.test from loopback clients (STARTTLS offered),
# queue durably, relay to the sink over TLS that must be used (Postfix: smtp_tls_security_level=encrypt).
hostname: relay.portcullis.bench.test
dataDir: $RUN/data.$1.$2
$([[ $1 == postgres ]] && echo 'store: { type: postgres }   # url: PORTCULLIS_STORE_URL' || true)
$([[ $2 == 1 ]] || echo 'admin: { enabled: false }')
$([[ $EUID == 0 ]] && echo 'runAs: root      # the benchmark runs as root (CI); a real server names its user' || true)
log: { level: ${LOG_LEVEL:-info} }
smtp:
  listen: ["127.0.0.1:$((PORT + $2 - 1))"]
  maxConnectionsPerIP: 1000
tls:
  certificates: [{ cert: $CERTS/server-chain.pem, key: $CERTS/server.key }]
  trust: { system: false, caFiles: [$CERTS/ca.pem] }
$( ((${#delivery[@]})) && echo "delivery: { $(IFS=,; echo "${delivery[*]}") }" || true)
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
}
for st in $STORES; do for i in $(seq 5); do write_config "$st" "$i"; done; done
drain_of() { echo "bash $ROOT/bench/drain.sh $(cfg_of "$1" 1)"; }
WORKERS=${WORKERS:-"1 auto"}
for w in $WORKERS; do [[ $w =~ ^([0-9]+|auto)$ ]] || { echo "WORKERS: '$w' is not a number or auto" >&2; exit 2; }; done
export WARMUP=${WARMUP:-${N:-5000}}
export RESULTS=${RESULTS:-$BENCH_WORK/results/$(date -u +%Y%m%dT%H%M%SZ)-relay.jsonl}
mkdir -p "$(dirname "$RESULTS")" "$BENCH_WORK/logs"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores; warm-up $WARMUP messages per target; results -> $RESULTS"
# start_portcullis STORE W [K]: K nodes (default 1) on STORE with `workers: W`, each in a process
# group of its own, node i on 127.0.0.1:PORT+i-1; stopped (SIGTERM to each group) by stop_portcullis.
start_portcullis() {
  local i
  : > "$RUN/pids"
  for i in $(seq "${3:-1}"); do
    rm -rf "$RUN/data.$1.$i"
    (cd "$RUN" && exec setsid node "$ROOT/bin/portcullis.js" serve -c "$(cfg_of "$1" "$i")" --workers "$2" \
      > "$BENCH_WORK/logs/target-$1-w$2-n$i.log" 2>&1) &
    echo $! >> "$RUN/pids"
  done
  for i in $(seq "${3:-1}"); do
    for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$((PORT + i - 1))") 2>/dev/null && break; sleep 0.2; done
  done
}
stop_portcullis() {
  [[ -s $RUN/pids ]] || return 0
  local pid
  for pid in $(cat "$RUN/pids"); do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in $(cat "$RUN/pids"); do
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  done
  : > "$RUN/pids"
}
trap 'stop_portcullis; bash "$SHARED/sink.sh" stop >/dev/null 2>&1 || true; [[ -z $PG_PID ]] || kill "$PG_PID" 2>/dev/null || true' EXIT
# measure_nodes LABEL K DRAIN: the run-target.sh loop (warm-up, REPS × config b, DRAIN after each)
# against K nodes, the generator's sessions and messages spread over them.
measure_nodes() {
  local label=$1 k=$2 drain=$3 targets rep
  targets=$(for i in $(seq "$k"); do echo "127.0.0.1:$((PORT + i - 1))"; done | paste -sd,)
  local load=(node "$ROOT/bench/lib/split-client.mjs" "$SHARED/client.js" --targets "$targets" --
    --concurrency "${C:-20}" --size "${SIZE:-5120}" --timeout-s "${TIMEOUT:-300}" --tls)
  local measure=(node "$SHARED/measure.js" --sink-ctl "http://127.0.0.1:${SINK_CTL_PORT:-2598}")
  echo "== $label: $k nodes ($targets), N=${N:-5000} C=${C:-20} SIZE=${SIZE:-5120} REPS=${REPS:-3} -> $RESULTS"
  "${measure[@]}" --label "$label:warmup" --expect "${WARMUP:-200}" --timeout-s 120 \
    --results "$BENCH_WORK/logs/warmup.jsonl" -- "${load[@]}" --count "${WARMUP:-200}" > /dev/null
  eval "$drain"
  for rep in $(seq "${REPS:-3}"); do
    "${measure[@]}" --label "$label:b" --expect "${N:-5000}" --timeout-s "${TIMEOUT:-300}" --results "$RESULTS" \
      -- "${load[@]}" --count "${N:-5000}" > /dev/null || echo "!! run $label:b rep $rep failed/incomplete"
    eval "$drain"
    sleep 2
  done
}
# Labels: portcullis-w1 (SQLite, one node), portcullis-pg-w1, portcullis-pg-n2-w1 (two nodes) …
LABELS=()
first=1
for st in $STORES; do
  for n in $NODES; do
    [[ $n == 1 || $st == postgres ]] || continue # several nodes need the shared store
    for w in $WORKERS; do
      label=portcullis$([[ $st == sqlite ]] || echo -pg)$([[ $n == 1 ]] || echo "-n$n")-w$w
      LABELS+=("$label")
      drain=$(drain_of "$st")
      if [[ $n != 1 ]]; then
        bash "$SHARED/sink.sh" start >/dev/null 2>&1 || true
        start_portcullis "$st" "$w" "$n"
        measure_nodes "$label" "$n" "$drain"
        stop_portcullis
      elif [[ ${PORTCULLIS_ONLY:-0} == 1 || $first == 0 ]]; then
        bash "$SHARED/sink.sh" start >/dev/null 2>&1 || true
        start_portcullis "$st" "$w"
        NAME=$label TARGET_PORT=$PORT DRAIN_CMD="$drain" \
          CONFIGS=${CONFIGS:-$([[ ${PORTCULLIS_ONLY:-0} == 1 ]] && echo b || echo "b a")} bash "$SHARED/run-target.sh"
        stop_portcullis
      else
        rm -rf "$RUN/data.$st.1"
        TARGET_NAME=$label TARGET_PORT=$PORT DRAIN_CMD="$drain" KEEP_SINK=1 \
          TARGET_START="node $ROOT/bin/portcullis.js serve -c $(cfg_of "$st" 1) --workers $w" \
          PF_EXTRA=${PF_EXTRA:-"smtp_tls_connection_reuse = yes"} bash "$SHARED/compare.sh"
      fi
      first=0
    done
  done
done
# The zero-cost relay: the same generator straight into the sink (same N, C, SIZE, TLS), so that
# the relay's CPU per message can be set against what one SMTP/TLS server plus one client cost.
if [[ ${DIRECT:-1} == 1 ]]; then
  bash "$SHARED/sink.sh" start >/dev/null 2>&1 || true
  NAME=direct TARGET_PORT=2526 DRAIN_CMD= CONFIGS=b bash "$SHARED/run-target.sh" >/dev/null
fi
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ ${PORTCULLIS_ONLY:-0} != 1 ]]; then
  for label in "${LABELS[@]}"; do
    echo; echo "== $label vs Postfix"
    node "$SHARED/report.js" --compare postfix "$label" "$RESULTS"
  done
else
  node "$SHARED/report.js" "$RESULTS"
fi
node --import tsx "$ROOT/bench/relay-summary.ts" "$RESULTS"
