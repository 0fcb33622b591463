"""Labels from the air: APRS position beacons decoded from captures become labelled sessions."""
