"""Live transcription: sessions that stream audio in and partial and final text out.

The API relays (api/realtime.py speaks OpenAI's Realtime protocol to the client); a worker
runs the session (runner.py) with the model it already holds. Between them, Redis Streams
(relay.py): audio frames in, events out, both bounded; a fenced lease says which worker
process owns the session, and a worker that dies hands it to another from its last final.
turns.py turns samples into utterances and text and knows nothing of Redis or protocols.
"""
