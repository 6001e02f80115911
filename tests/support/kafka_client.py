"""An independent Kafka client for the end-to-end tests (confluent-kafka).

The tests check Sluice's Kafka connector with this, not with Sluice itself:

    kafka_client.py BROKERS create TOPIC PARTITIONS
    kafka_client.py BROKERS produce TOPIC < messages.jsonl
    kafka_client.py BROKERS consume TOPIC [--idle SECONDS]
    kafka_client.py BROKERS committed TOPIC

`produce` reads one JSON object per line: {"value": text} or
{"value_hex": hex} (for bytes that are not UTF-8), with optional "key",
"partition" and "headers" ({name: text}); it exits non-zero unless every
message was acknowledged. `consume` reads every partition from the start,
without a consumer group, and prints each message as a JSON line
({"topic", "partition", "offset", "key", "value", "value_hex",
"timestamp", "headers"}) as it arrives, until killed or until nothing has
arrived for --idle seconds.

`committed` prints, as the same JSON lines, what a `read_committed` reader
must see: every message of a committed transaction (and every
non-transactional one), in partition order. It works it out itself from the
raw log (kafka-python's record-batch reader): messages of a transactional
producer wait for the control record that ends their transaction (same
producer id and epoch): a COMMIT keeps them, an ABORT drops them, and so
does a newer epoch of the producer (it fenced theirs); messages still open
at the end are not printed.
This does not trust the broker's own filtering (the broker the tests use
returns aborted messages to read_committed consumers).
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create(brokers, topic, partitions):
    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics([NewTopic(topic, num_partitions=int(partitions), replication_factor=1)])
    for future in futures.values():
        future.result(timeout=30)
    # Wait until the topic's metadata shows every partition.
    deadline = time.time() + 30
    while time.time() < deadline:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        if meta is not None and meta.error is None and len(meta.partitions) == int(partitions):
            return
        time.sleep(0.1)
    sys.exit(f"topic {topic} did not appear with {partitions} partitions")


def produce(brokers, topic):
    producer = Producer({"bootstrap.servers": brokers, "acks": "all", "linger.ms": 5})
    failures = []

    def report(err, _msg):
        if err is not None:
            failures.append(str(err))

    sent = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        m = json.loads(line)
        value = bytes.fromhex(m["value_hex"]) if "value_hex" in m else m["value"].encode()
        kwargs = {"value": value, "on_delivery": report}
        if "key" in m:
            kwargs["key"] = m["key"].encode()
        if "partition" in m:
            kwargs["partition"] = m["partition"]
        if "headers" in m:
            kwargs["headers"] = [(k, v.encode()) for k, v in m["headers"].items()]
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        sent += 1
    left = producer.flush(60)
    if left or failures:
        sys.exit(f"{left} messages unflushed, {len(failures)} failed: {failures[:3]}")
    print(sent)


def consume(brokers, topic, idle):
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": "sluice-tests-reader",  # required, unused: partitions are assigned here
            "enable.auto.commit": False,
        }
    )
    deadline = time.time() + 30
    while True:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is not None and meta.error is None and meta.partitions:
            break
        if time.time() > deadline:
            sys.exit(f"topic {topic} not found")
        time.sleep(0.2)
    consumer.assign([TopicPartition(topic, p, -2) for p in meta.partitions])  # -2: beginning
    last = time.time()
    while idle is None or time.time() - last < idle:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == -191:  # partition EOF
                continue
            raise KafkaException(msg.error())
        last = time.time()
        value = msg.value() or b""
        try:
            text = value.decode()
        except UnicodeDecodeError:
            text = None
        print(
            json.dumps(
                {
                    "topic": msg.topic(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "key": msg.key().decode(errors="replace") if msg.key() is not None else None,
                    "value": text,
                    "value_hex": value.hex(),
                    "timestamp": msg.timestamp()[1],
                    "headers": {k: (v or b"").decode(errors="replace") for k, v in (msg.headers() or [])},
                }
            ),
            flush=True,
        )
    consumer.close()


def committed(brokers, topic):
    from kafka.client_async import KafkaClient
    from kafka.protocol.fetch import FetchRequest
    from kafka.record import MemoryRecords

    meta = AdminClient({"bootstrap.servers": brokers}).list_topics(topic, timeout=10).topics[topic]
    client = KafkaClient(bootstrap_servers=brokers, api_version=(2, 5))
    out = []
    for partition in sorted(meta.partitions):
        leader = meta.partitions[partition].leader
        while not client.ready(leader):
            client.poll(timeout_ms=100)
        offset, kept = 0, []
        pending = {}  # producer id -> its messages waiting for a marker
        while True:
            # Fetch v4, isolation READ_UNCOMMITTED (0): the raw log, markers included.
            request = FetchRequest[4](-1, 1000, 1, 50_000_000, 0, [(topic, [(partition, offset, 50_000_000)])])
            future = client.send(leader, request)
            client.poll(future=future)
            (_, parts), = future.value.topics
            _, error, high, _, _, data = parts[0]
            if error:
                sys.exit(f"fetch {topic}/{partition}: error {error}")
            records = MemoryRecords(data)
            progressed = False
            while (batch := records.next_batch()) is not None:
                for record in batch:
                    if record.offset < offset:
                        continue
                    offset = record.offset + 1
                    progressed = True
                    pid, epoch = batch.producer_id, batch.producer_epoch
                    waiting = pending.get(pid, [])
                    if batch.is_control_batch:
                        # Key: version (int16), type (int16): 0 ABORT, 1 COMMIT.
                        # A marker ends its epoch's transaction; anything of
                        # an older epoch was fenced, so aborted.
                        kind = int.from_bytes(record.key[2:4], "big")
                        if kind == 1:
                            kept.extend(m for e, m in waiting if e == epoch)
                        pending[pid] = [(e, m) for e, m in waiting if e > epoch]
                        continue
                    message = (partition, record.offset, record.key, record.value, dict(record.headers))
                    if batch.is_transactional:
                        # A newer epoch means the older one was fenced.
                        pending[pid] = [(e, m) for e, m in waiting if e >= epoch] + [(epoch, message)]
                    else:
                        kept.append(message)
            if offset >= high or not progressed:
                break
        out.extend(sorted(kept, key=lambda m: m[1]))
    for partition, offset, key, value, headers in out:
        print(
            json.dumps(
                {
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                    "key": key.decode(errors="replace") if key is not None else None,
                    "value": (value or b"").decode(errors="replace"),
                    "headers": {k: (v or b"").decode(errors="replace") for k, v in headers.items()},
                }
            )
        )
    client.close()


def main():
    brokers, command, *args = sys.argv[1:]
    if command == "create":
        create(brokers, *args)
    elif command == "produce":
        produce(brokers, *args)
    elif command == "consume":
        idle = None
        if "--idle" in args:
            i = args.index("--idle")
            idle = float(args[i + 1])
            args = args[:i] + args[i + 2 :]
        consume(brokers, args[0], idle)
    elif command == "committed":
        committed(brokers, args[0])
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
