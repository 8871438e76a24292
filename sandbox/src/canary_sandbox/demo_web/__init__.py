"""The demo workspace behind `canary-bot demo`: its world, its web page and the page's server.

`world` runs everything the demo needs on loopback; `session` acts for the page's user as a Slack
client would; `server` serves the page (`static/`, plain HTML, JavaScript and CSS) and its API.
"""
