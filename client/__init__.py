"""Flower ClientApp: a party's side of both collaboration protocols."""
