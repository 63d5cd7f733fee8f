"""Adapters to faust and aiokafka: the batch consumer and its offset rules, end offsets,
the partitioner, the transport, and the one path records take to the producer."""
