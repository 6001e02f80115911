"""word-split in Python: one record per whitespace-separated word of each
value, with the input's timestamp; `lowercase = "true"` lowercases the words;
a value that is not UTF-8 fails that record alone (it is dead-lettered)."""
from wit_world import exports
from wit_world.imports.types import Batch, Column, Output, RecordFailure


# componentize-py makes a fresh Processor for every call: keep settings in
# the module, which lives as long as the instance.
LOWERCASE = False


class Processor(exports.Processor):
    def init(self, config):
        global LOWERCASE
        LOWERCASE = dict(config).get("lowercase", "false") == "true"

    def process(self, info, batch):
        data = bytes(batch.values.data)
        offsets = batch.values.offsets
        out_data = bytearray()
        out_offsets = [0]
        out_ts = []
        failures = []
        for i, ts in enumerate(batch.timestamps):
            raw = data[offsets[i]:offsets[i + 1]]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                failures.append(RecordFailure(i, f"value is not valid UTF-8 at byte {e.start}"))
                continue
            if LOWERCASE:
                text = text.lower()
            for word in text.split():
                out_data += word.encode("utf-8")
                out_offsets.append(len(out_data))
                out_ts.append(ts)
        empty = Column(b"", [])
        values = Column(bytes(out_data), out_offsets if out_ts else [])
        return Output(Batch(out_ts, values, empty, b"", [], empty, empty), failures)
