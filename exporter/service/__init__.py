"""Process wiring: settings, the app that builds and runs every part, the web app, TLS, auth, admission."""
