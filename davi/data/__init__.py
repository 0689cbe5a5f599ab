"""Data: image data sets (bundled digits, image folders), measurement sets without clean images, RED-Diff anchors."""
