#!/bin/bash
# ceph-s3.sh - a throwaway single-node Ceph (Debian 12's 16.2) with a radosgw
# S3 endpoint on 127.0.0.1, for trove's integration tests.
#
# One ceph-mon, one ceph-osd (memstore: objects live in RAM), no ceph-mgr,
# pools of size 1, cephx off (loopback only). S3 SigV4 auth in radosgw is
# fully enforced. Starts in a few seconds.
#
# usage: ceph-s3.sh start|stop|kill|status|stop-rgw|start-rgw|kill-rgw|pause-rgw|resume-rgw
#   env: CEPH_S3_DIR       state directory (required; wiped on start if it
#                          holds a previous instance, refused if it holds
#                          anything else)
#        CEPH_S3_MON_PORT  mon port (default: a free port)
#        CEPH_S3_RGW_PORT  S3 port (default: a free port)
#        S3_ACCESS_KEY, S3_SECRET_KEY  credentials of the test user
# start prints the endpoint and writes $CEPH_S3_DIR/s3.env (shell syntax:
# S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION).
# stop: SIGTERM each daemon (radosgw, osd, mon), SIGKILL after 10 s.
# kill: SIGKILL all daemons at once (the state is throwaway anyway).
# stop-rgw / start-rgw: stop or restart only radosgw (same port, same data),
# to test clients through an S3 outage.
# kill-rgw: SIGKILL radosgw (a crash: in-flight requests are cut off); start-rgw
# brings it back.
# pause-rgw / resume-rgw: SIGSTOP / SIGCONT radosgw: the port still accepts
# connections (the kernel's backlog) but nothing answers, as with a stalled
# server.
set -euo pipefail

DIR=${CEPH_S3_DIR:?CEPH_S3_DIR must name the state directory}
ACCESS_KEY=${S3_ACCESS_KEY:-TROVETESTACCESSKEY01}
SECRET_KEY=${S3_SECRET_KEY:-trovetestsecretkey0123456789abcdefghijkl}
CONF=$DIR/ceph.conf

free_port() {
  /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

stop() {
  local n f pid i
  for n in client.rgw.a osd.0 mon.a; do
    f="$DIR/run/$n.pid"
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    rm -f "$f"
    kill -CONT "$pid" 2>/dev/null || true  # a paused daemon handles no SIGTERM
    if kill "$pid" 2>/dev/null; then
      for i in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
}

kill_daemons() {
  local f
  for f in "$DIR"/run/*.pid; do
    [ -e "$f" ] || continue
    kill -9 "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

start() {
  local MON_PORT RGW_PORT FSID OSD_UUID ID i
  if [ -e "$DIR" ]; then
    if [ -e "$DIR/ceph.conf" ]; then
      stop
      rm -rf "$DIR"
    elif [ -n "$(ls -A "$DIR")" ]; then
      echo "ceph-s3: $DIR exists and is not a ceph-s3 dir; refusing to wipe it" >&2
      exit 1
    fi
  fi
  for b in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph; do
    command -v "$b" >/dev/null || { echo "ceph-s3: $b not installed (tools/install-deps)" >&2; exit 1; }
  done
  MON_PORT=${CEPH_S3_MON_PORT:-$(free_port)}
  RGW_PORT=${CEPH_S3_RGW_PORT:-$(free_port)}
  mkdir -p "$DIR"/{log,run,mon/a,osd/0,rgw,tmp}
  FSID=$(cat /proc/sys/kernel/random/uuid)
  cat > "$CONF" <<CONFEOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.1/32
ms bind ipv6 = false
ms bind msgr1 = false
ms mon client mode = crc
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
mon warn on insecure global id reclaim allowed = false
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
mon cluster log file = $DIR/log/cluster.log
crash dir = $DIR/tmp
keyring = $DIR/keyring
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.05
osd fast shutdown = true
[mon]
mon data = $DIR/mon/\$id
[osd]
osd data = $DIR/osd/\$id
osd objectstore = memstore
memstore device bytes = 1073741824
osd memory target = 1073741824
osd op num shards = 1
osd op num threads per shard = 2
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $DIR/rgw
rgw dns name = localhost
rgw enable lc threads = false
log file = $DIR/log/rgw.log
CONFEOF
  : > "$DIR/keyring"
  {
    monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/tmp/monmap"
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/tmp/monmap"
    ceph-mon -c "$CONF" -i a
    timeout 60 ceph -c "$CONF" --connect-timeout 30 health
    OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
    ID=$(timeout 60 ceph -c "$CONF" osd new "$OSD_UUID")
    timeout 120 ceph-osd -c "$CONF" -i "$ID" --mkfs --osd-uuid "$OSD_UUID"
    timeout 120 ceph-osd -c "$CONF" -i "$ID"
    # radosgw forks once it is connected and has created its pools.
    timeout 120 radosgw -c "$CONF" -n client.rgw.a
  } >> "$DIR/log/start.log" 2>&1 || {
    echo "ceph-s3: start failed, see $DIR/log/" >&2
    tail -20 "$DIR/log/start.log" >&2
    kill_daemons
    exit 1
  }
  for i in $(seq 1 600); do
    curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/" && break
    sleep 0.1
  done
  curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/" ||
    { echo "ceph-s3: radosgw not answering on port $RGW_PORT" >&2; kill_daemons; exit 1; }
  radosgw-admin -c "$CONF" user create --uid=tester --display-name="trove test user" \
      --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >> "$DIR/log/start.log" 2>&1 ||
    { echo "ceph-s3: creating the S3 user failed, see $DIR/log/start.log" >&2; kill_daemons; exit 1; }
  cat > "$DIR/s3.env" <<ENVEOF
S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
S3_ACCESS_KEY=$ACCESS_KEY
S3_SECRET_KEY=$SECRET_KEY
S3_REGION=us-east-1
ENVEOF
  echo "S3 endpoint http://127.0.0.1:$RGW_PORT access_key=$ACCESS_KEY"
}

stop_rgw() {
  local f="$DIR/run/client.rgw.a.pid" pid i
  [ -e "$f" ] || return 0
  pid=$(cat "$f")
  rm -f "$f"
  kill -CONT "$pid" 2>/dev/null || true
  if kill "$pid" 2>/dev/null; then
    for i in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  fi
}

rgw_pid() {
  local f="$DIR/run/client.rgw.a.pid"
  [ -e "$f" ] && cat "$f"
}

kill_rgw() {
  local pid i
  pid=$(rgw_pid) || return 0
  rm -f "$DIR/run/client.rgw.a.pid"
  kill -CONT "$pid" 2>/dev/null || true
  kill -9 "$pid" 2>/dev/null || return 0
  for i in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  echo "ceph-s3: radosgw $pid did not die" >&2
  exit 1
}

signal_rgw() {
  local pid
  pid=$(rgw_pid) || { echo "ceph-s3: radosgw is not running" >&2; exit 1; }
  kill "-$1" "$pid"
}

start_rgw() {
  local endpoint i
  endpoint=$(sed -n 's/^S3_ENDPOINT=//p' "$DIR/s3.env")
  timeout 120 radosgw -c "$CONF" -n client.rgw.a >> "$DIR/log/start.log" 2>&1 ||
    { echo "ceph-s3: radosgw did not start, see $DIR/log/" >&2; exit 1; }
  for i in $(seq 1 600); do
    curl -s -o /dev/null "$endpoint/" && return 0
    sleep 0.1
  done
  echo "ceph-s3: radosgw not answering at $endpoint" >&2
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  kill) kill_daemons ;;
  status) ceph -c "$CONF" -s ;;
  stop-rgw) stop_rgw ;;
  start-rgw) start_rgw ;;
  kill-rgw) kill_rgw ;;
  pause-rgw) signal_rgw STOP ;;
  resume-rgw) signal_rgw CONT ;;
  *) echo "usage: $0 start|stop|kill|status|stop-rgw|start-rgw|kill-rgw|pause-rgw|resume-rgw" >&2; exit 2 ;;
esac
