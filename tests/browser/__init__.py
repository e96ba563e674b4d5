"""Browser tests: Playwright driving Debian's Chromium (/usr/bin/chromium), never a downloaded build."""
