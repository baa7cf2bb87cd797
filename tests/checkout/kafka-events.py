#!/usr/bin/env python3
"""Check events read from Kafka with kcat -f '%k\\t%S\\n%s\\n' against the
seed's Part 7 contracts: each message's payload (the libsaga envelope, which
carries the JSON body) holds one JSON event with the contract's fields, and
the Kafka key is the event's order_id.   usage: kafka-events.py FILE..."""
import json
import sys

CONTRACTS = {
    "OrderCreatedEvent": ["event_id", "order_id", "user_id", "cart_id",
                          "items", "total_amount", "shipping_address",
                          "timestamp"],
    "OrderStatusUpdatedEvent": ["event_id", "order_id", "previous_status",
                                "new_status", "timestamp"],
    "OrderCancelledEvent": ["event_id", "order_id", "reason",
                            "compensation_required", "timestamp"],
    "PaymentProcessedEvent": ["event_id", "order_id", "payment_id",
                              "transaction_id", "amount", "success",
                              "timestamp"],
    "PaymentFailedEvent": ["event_id", "order_id", "payment_id",
                           "error_code", "error_message", "timestamp"],
}
ITEM = ["product_id", "quantity", "price"]


def messages(path):
    data = open(path, "rb").read()
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        key, length = data[i:nl].split(b"\t")
        n = int(length)
        yield key.decode(), data[nl + 1:nl + 1 + n]
        i = nl + 1 + n + 1


def body(payload):
    dec = json.JSONDecoder()
    start = payload.find(b'{"')
    while start >= 0:
        try:
            obj, _ = dec.raw_decode(payload[start:].decode("utf-8", "replace"))
            if isinstance(obj, dict) and "event_type" in obj:
                return obj
        except ValueError:
            pass
        start = payload.find(b'{"', start + 1)
    return None


def main():
    fails, seen = [], {}
    for path in sys.argv[1:]:
        for key, payload in messages(path):
            ev = body(payload)
            if ev is None:
                fails.append("%s: a message without a JSON event body" % path)
                continue
            t = ev["event_type"]
            seen[t] = seen.get(t, 0) + 1
            for f in ["event_id", "event_type", "order_id", "timestamp"] + \
                    CONTRACTS.get(t, []):
                if f not in ev:
                    fails.append("%s %s: no field %s" % (t, ev.get("event_id"), f))
            if key != ev.get("order_id"):
                fails.append("%s %s: key %r is not order_id %r"
                             % (t, ev.get("event_id"), key, ev.get("order_id")))
            for it in ev.get("items", []) if t == "OrderCreatedEvent" else []:
                for f in ITEM:
                    if f not in it:
                        fails.append("%s: item without %s" % (t, f))
    for need in ("OrderCreatedEvent", "PaymentProcessedEvent"):
        if not seen.get(need):
            fails.append("no %s on Kafka" % need)
    for f in fails[:30]:
        print("kafka-events FAIL:", f)
    print("kafka-events: %s; %d failure(s)" % (
        ", ".join("%s=%d" % kv for kv in sorted(seen.items())), len(fails)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
