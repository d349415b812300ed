"""``python -m dicom_node.cli`` = ``meddet``."""

from dicom_node.cli import main

main()
