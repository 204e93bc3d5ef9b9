"""`lanner client`: a Gemini-protocol chat client for a local `lanner serve` or the public Google API.

Built on the official google-genai SDK (the optional extra `lanner[client]`). Files in data-path
order: options (flags), endpoint (where to connect, which key, which model), conversation
(history and system instruction), reply (one streamed generation), repl (the interactive loop),
main (prompt mode, error reporting). The API key is sent only in the SDK's `x-goog-api-key`
header and is never printed or logged.
"""
