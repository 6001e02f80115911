"""Independent clients for the ZeroMQ, MQTT and NATS end-to-end tests
(pyzmq, paho-mqtt, nats-py): the tests check Sluice's connectors with these,
never with Sluice itself.

    connectors_client.py zmq-send ENDPOINT push|pub [--bind] [--pace N]  < messages
    connectors_client.py mqtt-publish URL TOPIC [--qos Q] [--pace N] [--retain] < lines
    connectors_client.py mqtt-subscribe URL FILTER [--qos Q]
    connectors_client.py nats-publish URL SUBJECT [--jetstream]           < lines
    connectors_client.py nats-subscribe URL SUBJECT
    connectors_client.py nats-stream URL NAME SUBJECT...  (creates a file-backed stream)
    connectors_client.py nats-read URL STREAM                (every message stored)

Input for `zmq-send` is one JSON list of frames (strings) per line; for the
others one message per line (its text). The senders pause N ms after every
100 messages with --pace, so that input keeps coming while a test kills and
restarts things; they retry what a restarting server refused, and exit
non-zero unless every message was sent (MQTT: acknowledged at QoS 1;
JetStream: confirmed by the stream). The readers print one JSON object per
message ({"topic"|"subject", "value", "headers"}) as it arrives, until
killed (a subscriber first prints {"ready": true} once subscribed);
`nats-read` prints what the stream holds and exits.
"""

import asyncio
import json
import sys
import time


def pace(i, every_ms):
    if every_ms and i % 100 == 99:
        time.sleep(every_ms / 1000)


def zmq_send(endpoint, kind, bind, every_ms):
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH if kind == "push" else zmq.PUB)
    sock.setsockopt(zmq.LINGER, 60000)
    sock.setsockopt(zmq.SNDHWM, 0)
    if bind:
        sock.bind(endpoint)
    else:
        sock.connect(endpoint)
    if kind == "pub":
        time.sleep(1.0)  # slow joiner: let subscriptions arrive first
    for i, line in enumerate(sys.stdin):
        frames = [f.encode() for f in json.loads(line)]
        sock.send_multipart(frames)
        pace(i, every_ms)
    sock.close()  # waits up to LINGER for queued messages to go
    ctx.term()


def mqtt_client(url, client_id=""):
    import paho.mqtt.client as mqtt

    host, port = url.split("://", 1)[1].rsplit(":", 1)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.reconnect_delay_set(0.1, 1)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    return client, host, int(port)


def mqtt_publish(url, topic, qos, every_ms, retain):
    client, host, port = mqtt_client(url)
    while True:
        try:
            client.connect(host, port)
            break
        except OSError:
            time.sleep(0.2)
    client.loop_start()

    def send(payload):
        # Refused while the broker is away: wait for the reconnect.
        while True:
            info = client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc == 0:
                return info
            time.sleep(0.1)

    sent = []
    for i, line in enumerate(sys.stdin):
        payload = line.rstrip("\n").encode()
        sent.append((payload, send(payload)))
        pace(i, every_ms)
    deadline = time.time() + 120
    for payload, info in sent:
        while True:
            try:
                if info.is_published():
                    break
            except RuntimeError:
                # Lost with a connection: send it again.
                info = send(payload)
            if time.time() > deadline:
                sys.exit("messages were not acknowledged within 120 s")
            time.sleep(0.01)
    client.disconnect()
    client.loop_stop()


def mqtt_subscribe(url, topic_filter, qos):
    client, host, port = mqtt_client(url)

    def on_connect(c, _userdata, _flags, _rc, _props):
        c.subscribe(topic_filter, qos=qos)

    def on_message(_c, _userdata, msg):
        out = {"topic": msg.topic, "value": msg.payload.decode("utf-8", "replace")}
        print(json.dumps(out), flush=True)

    def on_subscribe(_c, _userdata, _mid, _codes, _props):
        print(json.dumps({"ready": True}), flush=True)

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    while True:
        try:
            client.connect(host, port)
            break
        except OSError:
            time.sleep(0.2)
    client.loop_forever(retry_first_connection=True)


async def nats_connect(url):
    import nats

    return await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                              allow_reconnect=True)


async def nats_publish(url, subject, jetstream, every_ms):
    nc = await nats_connect(url)
    js = nc.jetstream() if jetstream else None
    for i, line in enumerate(sys.stdin):
        data = line.rstrip("\n").encode()
        if js is None:
            await nc.publish(subject, data)
        else:
            for attempt in range(600):
                try:
                    await js.publish(subject, data, timeout=2)
                    break
                except Exception as e:  # the server is restarting: try again
                    if attempt == 599:
                        raise
                    await asyncio.sleep(0.2)
        if every_ms and i % 100 == 99:
            await asyncio.sleep(every_ms / 1000)
    await nc.flush(timeout=30)
    await nc.close()


async def nats_subscribe(url, subject):
    nc = await nats_connect(url)

    async def handler(msg):
        headers = dict(msg.headers or {})
        print(json.dumps({"subject": msg.subject, "value": msg.data.decode("utf-8", "replace"),
                          "headers": headers}), flush=True)

    await nc.subscribe(subject, cb=handler)
    await nc.flush()
    print(json.dumps({"ready": True}), flush=True)
    while True:
        await asyncio.sleep(3600)


async def nats_stream(url, name, subjects):
    from nats.js.api import StorageType, StreamConfig

    nc = await nats_connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=subjects, storage=StorageType.FILE))
    await nc.close()


async def nats_read(url, stream):
    nc = await nats_connect(url)
    js = nc.jetstream()
    info = await js.stream_info(stream)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except Exception:
            continue  # deleted
        print(json.dumps({"subject": msg.subject, "value": msg.data.decode("utf-8", "replace"),
                          "headers": dict(msg.headers or {})}), flush=True)
    await nc.close()


def flag(name, default=None, cast=str):
    if name in sys.argv:
        return cast(sys.argv[sys.argv.index(name) + 1])
    return default


def main():
    cmd, args = sys.argv[1], [a for a in sys.argv[2:] if not a.startswith("--")]
    every_ms = flag("--pace", 0, int)
    if cmd == "zmq-send":
        zmq_send(args[0], args[1], "--bind" in sys.argv, every_ms)
    elif cmd == "mqtt-publish":
        mqtt_publish(args[0], args[1], flag("--qos", 1, int), every_ms, "--retain" in sys.argv)
    elif cmd == "mqtt-subscribe":
        mqtt_subscribe(args[0], args[1], flag("--qos", 1, int))
    elif cmd == "nats-publish":
        asyncio.run(nats_publish(args[0], args[1], "--jetstream" in sys.argv, every_ms))
    elif cmd == "nats-subscribe":
        asyncio.run(nats_subscribe(args[0], args[1]))
    elif cmd == "nats-stream":
        asyncio.run(nats_stream(args[0], args[1], args[2:]))
    elif cmd == "nats-read":
        asyncio.run(nats_read(args[0], args[1]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
