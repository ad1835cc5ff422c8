"""The console: web pages for credit analysts and operators at /console."""
