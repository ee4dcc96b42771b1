#!/bin/sh
# Creates the Kafka topics of the architecture brief and converges their settings; safe to run on
# every start. Used by docker compose (kafka-init) and Kubernetes (the kafka-topics Job) alike:
# deploy/compose/kafka/create-topics.sh and deploy/k8s/base/kafka/create-topics.sh are the same file
# (tests/deploy checks it).
#   TOPICS              lines of "name partitions retention-ms" ('-': the broker's default retention)
#   KAFKA_BOOTSTRAP     host:port of a broker
#   REPLICATION_FACTOR  copies of each partition (1 on one broker, 3 in production)
#   KAFKA_CLIENT_CONFIG optional client properties file (TLS/SASL for a managed cluster)
set -eu
bin="${KAFKA_BIN:-/opt/kafka/bin}"
: "${KAFKA_BOOTSTRAP:?KAFKA_BOOTSTRAP is not set}"
: "${TOPICS:?TOPICS is not set}"
rf="${REPLICATION_FACTOR:-1}"
# Client options for every call, as the positional parameters: "$@".
set --
if [ -n "${KAFKA_CLIENT_CONFIG:-}" ]; then set -- --command-config "$KAFKA_CLIENT_CONFIG"; fi

tries=0
until "$bin/kafka-topics.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" "$@" --list >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then echo "create-topics: no broker at $KAFKA_BOOTSTRAP after 120 s" >&2; exit 1; fi
  sleep 2
done

while read -r name partitions retention; do
  case "$name" in ''|'#'*) continue ;; esac
  "$bin/kafka-topics.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" "$@" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor "$rf"
  current=$("$bin/kafka-topics.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" "$@" --describe --topic "$name" \
    | sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' | head -n 1)
  if [ -n "$current" ] && [ "$current" -lt "$partitions" ]; then
    "$bin/kafka-topics.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" "$@" --alter --topic "$name" --partitions "$partitions"
  fi
  if [ "$retention" = "-" ]; then
    "$bin/kafka-configs.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" "$@" --alter --entity-type topics \
      --entity-name "$name" --delete-config retention.ms >/dev/null 2>&1 || true
  else
    "$bin/kafka-configs.sh" --bootstrap-server "$KAFKA_BOOTSTRAP" "$@" --alter --entity-type topics \
      --entity-name "$name" --add-config "retention.ms=$retention"
  fi
  echo "create-topics: $name partitions=$partitions retention.ms=$retention"
done <<EOF
$TOPICS
EOF
