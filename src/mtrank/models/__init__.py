"""Networks (feature layer, trunk, sharing, heads) and the LightningModule."""
