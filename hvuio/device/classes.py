"""Well-known VMBus class GUIDs and their names (VMBUS.md §2.7).

Pure data: no I/O, no imports from the rest of hvuio. `hvuio list` and `hvuio doctor` use it to
name devices; the emulator keeps its own copy of the few GUIDs it offers (sim imports nothing
from `device`), and a test checks that the two agree.
"""

from __future__ import annotations

from typing import Final

NIC_CLASS: Final = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
FCOPY_CLASS: Final = "34d14be3-dee4-41c8-9ae7-6b174977c192"
#: PCI pass-through (hv_pci): the VMBus device an Azure VF's PCI function sits under (VMBUS.md §2.5).
VPCI_CLASS: Final = "44c4f61d-4444-4400-9d52-802e27ede19f"

# class GUID (lowercase, no braces) -> (short name, description); VMBUS.md §2.7
CLASS_NAMES: Final[dict[str, tuple[str, str]]] = {
    NIC_CLASS: ("nic", "Synthetic NIC (netvsc)"),
    "32412632-86cb-44a2-9b5c-50d1417354f5": ("ide", "IDE (storvsc)"),
    "ba6163d9-04a1-4d29-b605-72e2ffb1dc7f": ("scsi", "SCSI (storvsc)"),
    "2f9bcc4a-0069-4af3-b76b-6fd0be528cda": ("fc", "Synthetic Fibre Channel"),
    "f912ad6d-2b17-48ea-bd65-f927a61c7684": ("keyboard", "Keyboard"),
    "cfa8b69e-5b4a-4cc0-b98b-8ba1a1f3f95a": ("mouse", "Mouse"),
    "da0a7802-e377-4aac-8e77-0558eb1073f8": ("video", "Synthetic video"),
    "57164f39-9115-4e78-ab55-382f3bd5422d": ("heartbeat", "Heartbeat (IC)"),
    "0e0b6031-5213-4934-818b-38d90ced39db": ("shutdown", "Shutdown (IC)"),
    "9527e630-d0ae-497b-adce-e80ab0175caf": ("timesync", "Time sync (IC)"),
    "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6": ("kvp", "KVP (IC)"),
    "35fa2e29-ea23-4236-96ae-3a6ebacba440": ("vss", "VSS / backup (IC)"),
    FCOPY_CLASS: ("fcopy", "File copy (IC)"),
    "525074dc-8985-46e2-8057-a307dc18a502": ("balloon", "Dynamic memory / balloon"),
    VPCI_CLASS: ("vpci", "PCI pass-through (hv_pci)"),
    "8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501": ("nd", "NetworkDirect (RDMA)"),
    "f8e65716-3cb3-4a06-9a60-1889c5cccab5": ("avma1", "AVMA 1 (ignored by Linux)"),
    "3375baf4-9e15-4b30-b765-67acb10d607b": ("avma2", "AVMA 2 (ignored by Linux)"),
    "276aacf4-ac15-426c-98dd-7521ad3f01fe": ("rdv", "Remote Desktop Virtualization (ignored)"),
    "c376c1c3-d276-48d2-90a9-c04748072c60": ("imc", "Initial Machine Configuration (ignored)"),
    "8dedd1aa-9056-49e4-bfd6-1bf90dc38ef0": ("ohcl-get", "OpenHCL GET"),
    "8b60ccf6-709f-4c11-90b5-229c959a9e6a": ("ohcl-uart", "OpenHCL UART"),
    "427b03e7-4ceb-4286-b5fc-486f4a1dd439": ("ohcl-crash", "OpenHCL crash dump"),
}


def class_name(class_id: str) -> str:
    """Short name of a class GUID ('nic', 'scsi', ...) or 'unknown'."""
    entry = CLASS_NAMES.get(class_id.strip("{}").lower())
    return entry[0] if entry else "unknown"


def class_description(class_id: str) -> str:
    """Human description of a class GUID, or 'unknown class <guid>'."""
    guid = class_id.strip("{}").lower()
    entry = CLASS_NAMES.get(guid)
    return entry[1] if entry else f"unknown class {guid}"
