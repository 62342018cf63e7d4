"""The checked spec: the only thing lowering and the runtime read. settings.py holds the
sections (data, optimizer, schedule, train, ...), graph_ir.py the model graph IR."""
