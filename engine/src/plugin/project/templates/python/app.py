"""`{{name}}`: a Sluice stage. Each record's value with the config's `suffix`
(default `!`) appended, keeping its key and timestamp; a value that is not
UTF-8 goes to the dead letters on its own (`record.text` raises a
`sluice.RecordError` for it)."""

import sluice


class Stage(sluice.Stage):
    def __init__(self, config):
        # First, so that a typo in a key is an error, not a default.
        config.allow_only(["suffix"])
        self.suffix = config.get("suffix", "!")

    def process_record(self, record, out):
        out.emit(record.text + self.suffix, key=record.key)


Processor = sluice.processor(Stage)
