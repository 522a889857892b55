"""pilot_gevent: the gevent binding of pilot-proto."""
