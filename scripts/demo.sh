#!/usr/bin/env bash
# The main job on one machine: the daemon against the local Mosquitto (127.0.0.1:1883, started
# here if nothing listens there), two virtual printers, sample orders; SQLite, no cloud. A fake
# delivery platform sends one order through the aggregator API (seed 004) and plays its
# courier; the kitchen's webhooks go back to it. Two guests at table 12 order from their
# phones (OpenApp, seed 002). Ends by listing the tickets' PNG files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
OUT=${DEMO_OUT:-$PWD/demo-out}
RUN=$(date +%H%M%S)
SITE=demo-kitchen
rm -rf "$OUT"; mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 1883; then
  echo "demo: no broker on 127.0.0.1:1883; starting mosquitto for the demo"
  mosquitto -p 1883 >"$OUT/mosquitto.log" 2>&1 & pids+=($!)
  for _ in $(seq 50); do port_open 1883 && break; sleep 0.1; done
fi

start_printer() {  # name -> prints the JSON line with its port
  $PY -m edge virtual-printer --port 0 --out "$OUT/printer-$1" --control-port 0 \
    >"$OUT/printer-$1.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do
    grep -q '"listening"' "$OUT/printer-$1.log" 2>/dev/null && break; sleep 0.1
  done
  grep '"listening"' "$OUT/printer-$1.log" | head -1 | $PY -c 'import json,sys; print(json.load(sys.stdin)["port"])'
}
HOT=$(start_printer hot)
BAR=$(start_printer bar)

start_market() {  # name -> the control port; its API port in $OUT/market-NAME.port
  printf 'demo-%s-token\n' "$1" >"$OUT/market-$1.token"
  chmod 600 "$OUT/market-$1.token"   # a secret: config check refuses one others can read
  $PY -m edge.connectors.marketplace.fake --port 0 --control-port 0 \
    --token-file "$OUT/market-$1.token" >"$OUT/market-$1.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do grep -q '"control_port"' "$OUT/market-$1.log" 2>/dev/null && break; sleep 0.1; done
  head -1 "$OUT/market-$1.log" | $PY -c 'import json,sys; d=json.load(sys.stdin); print(d["port"])' >"$OUT/market-$1.port"
  head -1 "$OUT/market-$1.log" | $PY -c 'import json,sys; print(json.load(sys.stdin)["control_port"])'
}
# Two fake seed 001 marketplaces: one whose orders the kitchen accepts at once, one whose
# orders wait for the restaurant's answer.
YEMEK_CTL=$(start_market yemek)
GETIR_CTL=$(start_market getir)
market() {  # control port, method, path[, JSON body] -> the control API's answer
  $PY - "$@" <<'PYEOF'
import json, sys, urllib.request
port, method, path = sys.argv[1:4]
data = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                             headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=10).read().decode())
PYEOF
}
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port)
AGG_PORT=$(free_port)

# The delivery platform's webhook receiver (seed 004), and the tokens both sides use.
( umask 077; echo "demo-platform-$RUN" >"$OUT/platform.token"; echo "demo-aggregator-$RUN" >"$OUT/aggregator.token" )
$PY -m edge.connectors.aggregator.fake_platform serve --token-file "$OUT/platform.token" \
  --base-path /hooks >"$OUT/platform.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do grep -q '"control_port"' "$OUT/platform.log" 2>/dev/null && break; sleep 0.1; done
PLATFORM_URL=$(head -1 "$OUT/platform.log" | $PY -c 'import json,sys; print(json.load(sys.stdin)["url"])')
PLATFORM_CONTROL=$(head -1 "$OUT/platform.log" | $PY -c 'import json,sys; print(json.load(sys.stdin)["control_port"])')

cat >"$OUT/station.yaml" <<YAML
site: $SITE
state_dir: ./state
mqtt:
  url: mqtt://127.0.0.1:1883
  client_id: kitchen-edge-demo-$RUN
  session_expiry: 300
printers:
  - id: hot-line
    connection: tcp://127.0.0.1:$HOT
    profile: TM-T88V
  - id: bar
    connection: tcp://127.0.0.1:$BAR
    profile: TM-T88V
    columns: 42
stations:
  - id: grill
    printer: hot-line
    backup: bar
    categories: [grill, mains]
  - id: drinks
    printer: bar
    categories: [drinks, desserts]
routing:
  default_station: grill
http:
  listen: 127.0.0.1:$HTTP_PORT
timezone: Europe/Istanbul
marketplaces:
  - id: yemek
    url: http://127.0.0.1:$(cat "$OUT/market-yemek.port")
    token_file: market-yemek.token
    poll_seconds: 2
    auto_accept: true
    prep_minutes: 25
    currency: TRY
    cancel_reasons: {out_of_stock: 1, busy: 3}
  - id: getir
    url: http://127.0.0.1:$(cat "$OUT/market-getir.port")
    token_file: market-getir.token
    poll_seconds: 2
    prep_minutes: 20
aggregator:
  listen: 127.0.0.1:$AGG_PORT
  token_file: aggregator.token
  webhook_url: $PLATFORM_URL
  webhook_token_file: platform.token
  auto_accept: true
  prep_minutes: 20
tables: ["1", "2", "7", "12"]
menu: menu.yaml
YAML
cat >"$OUT/menu.yaml" <<YAML
currency: TRY
products:
  - {id: adana, name: Adana kebap, category: grill, price: 42000, stock: 20}
  - {id: mercimek, name: Mercimek çorbası, category: mains, price: 12000, stock: 30}
  - {id: ayran, name: Ayran, category: drinks, price: 6000}
  - {id: cay, name: Çay, category: drinks, price: 2000}
  - {id: kunefe, name: Künefe, category: desserts, price: 18000, stock: 1}
  - {id: baklava, name: Baklava, category: desserts, price: 15000, stock: 0}
YAML
.venv/bin/kitchen-edge config check "$OUT/station.yaml"
.venv/bin/kitchen-edge run --config "$OUT/station.yaml" >"$OUT/daemon.log" 2>&1 & DAEMON=$!; pids+=($DAEMON)
for _ in $(seq 100); do grep -q daemon_ready "$OUT/daemon.log" && break; sleep 0.1; done
grep -q daemon_ready "$OUT/daemon.log" || { echo "daemon did not start:"; cat "$OUT/daemon.log"; exit 1; }
echo "demo: daemon ready (log: $OUT/daemon.log, http://127.0.0.1:$HTTP_PORT)"

$PY scripts/demo_orders.py --port 1883 --site $SITE --run "$RUN"

# A delivery platform's order (seed 004): POSTed to the aggregator API, accepted at once,
# ready at the pass, then the platform's courier from assignment to drop-off.
PLATFORM_ORDER=demo-$RUN
PLATFORM=(-m edge.connectors.aggregator.fake_platform)
echo "== a delivery platform sends order $PLATFORM_ORDER (POST /orders)"
$PY "${PLATFORM[@]}" order --api "http://127.0.0.1:$AGG_PORT" --token-file "$OUT/aggregator.token" \
  --id "$PLATFORM_ORDER" --fulfillment dx_delivery
sleep 2
mosquitto_pub -h 127.0.0.1 -p 1883 -q 1 -t "kitchen/$SITE/orders/ot-$PLATFORM_ORDER/events" -m "{
  \"event_id\": \"pass-ot-$PLATFORM_ORDER-ready\", \"type\": \"order.ready\",
  \"order_id\": \"ot-$PLATFORM_ORDER\", \"occurred_at\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",
  \"source\": {\"channel\": \"onetablet\", \"device\": \"pass\"}, \"data\": {}}"
echo "== its courier (POST /orders/$PLATFORM_ORDER/delivery-status, five times)"
$PY "${PLATFORM[@]}" dasher --api "http://127.0.0.1:$AGG_PORT" --token-file "$OUT/aggregator.token" \
  --id "$PLATFORM_ORDER"
sleep 2
echo
echo "== a table session from a phone (OpenApp, seed 002): table 12 scans, orders, is served, pays"
KE=.venv/bin/kitchen-edge
# The phone scans (the waiter's lines are on the check already), orders, then follows the
# table until the check closes; a second phone wants the last künefe and the baklava too.
$KE simulate openapp session 12 adana=1 kunefe=1 ayran=2 --note adana="az pişmiş" \
  --seconds 20 --config "$OUT/station.yaml" >"$OUT/openapp-phone.log" & PHONE=$!
sleep 2
$KE simulate openapp submit 12 kunefe=1 baklava=1 --config "$OUT/station.yaml" \
  >"$OUT/openapp-second-phone.log" || true
$PY scripts/demo_orders.py --port 1883 --site $SITE --run "$RUN" --waiter-closes-table-12
wait "$PHONE" || true
$PY - "$OUT/openapp-phone.log" "$OUT/openapp-second-phone.log" <<'PYEOF'
import json, sys
for who, path in zip(("first phone", "second phone"), sys.argv[1:]):
    print(f" {who}:")
    for raw in open(path, encoding="utf-8"):
        m = json.loads(raw)
        kind = m["message_type"]
        if kind == "TableOrderSnapshotResolutionResult":
            o = m.get("order") or {}
            print(f"  scan: {m['resolution']}, check {o.get('order_id')}, total {o.get('total')},"
                  f" lines " + ", ".join(f"{x['qty']}x {x['name']} {x['status']} ({x['added_by']})"
                                         for x in o.get("lines", [])))
        elif kind == "OrderSubmissionResult":
            print("  submit: accepted " + ", ".join(f"{x['qty']}x {x['product_id']}" for x in m["accepted"])
                  + "; rejected " + (", ".join(f"{x['product_id']} {x['reason']}" for x in m["rejected"]) or "none"))
        else:
            print(f"  pushed: {m['change_type']:16} total {m['order']['total']}")
PYEOF
echo
echo "== menu (running stock)"
$KE menu show --config "$OUT/station.yaml"
echo
echo "== timeline of qr-7001-$RUN (GET /orders/qr-7001-$RUN/timeline)"
$PY - "$HTTP_PORT" "qr-7001-$RUN" <<'PYEOF'
import json, sys, urllib.request
port, order = sys.argv[1], sys.argv[2]
body = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/orders/{order}/timeline"))
for step in body["steps"]:
    print(f"  {step['sequence']}. {step['label']:26} evidence {step['evidence']}")
print("  last status:", body["last_status"])
PYEOF
echo
echo "== marketplaces: one order accepted at once, one waiting for the restaurant"
YEMEK_ORDER=$(market "$YEMEK_CTL" POST /orders/build '{"courier_type": "restaurant", "payment_method": "CASH"}')
GETIR_ORDER=$(market "$GETIR_CTL" POST /orders/build '{"courier_type": "platform", "payment_method": "CREDIT_CARD"}')
GETIR_ID=getir-$(echo "$GETIR_ORDER" | $PY -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 100); do
  .venv/bin/kitchen-edge orders waiting --config "$OUT/station.yaml" --json | grep "$GETIR_ID" >/dev/null && break; sleep 0.2
done
.venv/bin/kitchen-edge marketplaces --config "$OUT/station.yaml"
echo
echo "demo: kitchen-edge orders accept $GETIR_ID --prep 30"
.venv/bin/kitchen-edge orders accept "$GETIR_ID" --prep 30 --config "$OUT/station.yaml"
sleep 5   # the accept goes back, the marketplace lists the order at its new status, acknowledged
for ctl in "$YEMEK_CTL" "$GETIR_CTL"; do
  market "$ctl" GET /requests | $PY -c '
import json, sys
for r in json.load(sys.stdin)["data"]:
    if r["method"] == "PUT":
        print("  marketplace got", r["method"], r["path"].rsplit("/", 1)[0], r["body"] or "", "->", r["status"])'
done
echo
.venv/bin/kitchen-edge marketplaces --config "$OUT/station.yaml"
echo
echo "== timeline of ot-$PLATFORM_ORDER (the platform's order) and the webhooks the platform got"
$PY - "$HTTP_PORT" "ot-$PLATFORM_ORDER" "$PLATFORM_CONTROL" <<'PYEOF'
import json, sys, urllib.request
port, order, control = sys.argv[1], sys.argv[2], sys.argv[3]
body = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/orders/{order}/timeline"))
for step in body["steps"]:
    print(f"  {step['sequence']:2}. {step['label']:26} evidence {step['evidence']}")
print("  last status:", body["last_status"])
hooks = json.load(urllib.request.urlopen(f"http://127.0.0.1:{control}/requests"))["requests"]
for hook in hooks:
    print(f"  webhook {hook['method']} {hook['path']} -> {hook['status']}: {json.dumps(hook['body'])}")
PYEOF
echo
.venv/bin/kitchen-edge aggregator --config "$OUT/station.yaml"
echo
echo "== jobs"
.venv/bin/kitchen-edge jobs list --config "$OUT/station.yaml" --limit 20
echo
echo "== dead letters"
.venv/bin/kitchen-edge dead-letter list --config "$OUT/station.yaml"
kill -TERM "$DAEMON"; wait "$DAEMON" || true
sleep 1   # the printers finish writing their PNGs
echo
echo "== tickets printed (PNG, text beside each)"
ls "$OUT"/printer-*/*.png
