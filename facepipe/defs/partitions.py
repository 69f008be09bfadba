"""One dynamic partition per image file; the key is its escaped path under the images root."""

import dagster as dg

images_partitions = dg.DynamicPartitionsDefinition(name="images")
