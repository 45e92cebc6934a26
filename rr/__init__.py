"""rr: an HTTP/1.1, HTTP/2, HTTP/3 and WebSocket server for gevent, built like an OTP system."""
