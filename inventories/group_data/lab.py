"""Parameters for the local lab only (every host of inventories/lab.py is in group "lab").

The lab has no Redis: the outbox dispatcher prints events (console publisher).
"""

app_outbox_publisher = "console"
