"""Terminal text of what the library reports about a NIC, shared by `up`, `status` and `demo`:
the negotiated parameters (NicInfo.to_dict, as `up` reports them and status records keep them)
as one aligned block, non-zero counters as a list, and the lifecycle's state line (hvuio/lifecycle.py).

What must not live here: click, commands, the data behind the text (hvuio/up.py,
hvuio/status.py, hvuio/nic.py).
"""

from __future__ import annotations

from typing import Any


def _speed(bps: int | None) -> str:
    if bps is None:
        return "unknown speed"
    for unit, div in (("Gbit/s", 10**9), ("Mbit/s", 10**6), ("kbit/s", 10**3)):
        if bps >= div:
            return f"{bps / div:g} {unit}"
    return f"{bps} bit/s"


def render_info(info: dict[str, Any]) -> str:
    """The negotiated parameters as one aligned block (keys as NicInfo.to_dict gives them)."""
    link = "unknown" if info["link_up"] is None else ("up" if info["link_up"] else "down")
    rows = [
        ("Device", f"{info['device']} ({info['uio']}, relid {info['relid']}, "
                   f"{'monitored' if info['monitored'] else 'not monitored'})"),
        ("NVSP", f"{info['nvsp']} ({info['nvsp_version']:#x}), NDIS {info['ndis']}, RNDIS {info['rndis_version']}"),
        ("MAC", f"{info['mac']} (permanent {info['permanent_mac']})"),
        ("MTU", _mtu_text(info)),
        ("TX path", str(info.get("tx_path") or "unknown")),
        ("Link", f"{link}, {_speed(info['link_speed_bps'])}"),
        ("Receive", f"{info['recv_section_count']} sections of {info['recv_section_size']} bytes "
                    f"({info['recv_buffer_size']} byte buffer)"),
        ("Send", f"{info['send_section_count']} sections of {info['send_section_size']} bytes "
                 f"({info['control_sections']} kept for control){_aggregation_text(info)}"),
        ("Queues", str(info["queues"])),
        ("Ring", f"{info['ring_size']} bytes per direction"),
        ("Offload", _offload_text(info.get("offloads") or {})),
    ]
    if info.get("vf") is not None:
        rows.append(("VF", _vf_text(info["vf"])))
    return "\n".join(f"{k:<8} {v}" for k, v in rows)


def _vf_text(vf: dict[str, Any]) -> str:
    if vf.get("serial") is None:
        return "none associated by the host (data path synthetic)"
    netdev = vf.get("netdev") or "netdev not found yet"
    return f"{netdev} (serial {vf['serial']}), data path {vf.get('data_path', 'synthetic')}"


def _mtu_text(info: dict[str, Any]) -> str:
    why = info.get("mtu_limited_by")
    if not why:
        return str(info["mtu"])
    return f"{info['mtu']} (asked {info.get('mtu_asked')}; {why})"


def _aggregation_text(info: dict[str, Any]) -> str:
    agg = info.get("tx_aggregation") or {}
    if not agg:
        return ""
    return f"; host takes up to {agg['max_packets']} packets per send, {agg['alignment']}-byte aligned"


def _offload_text(off: dict[str, Any]) -> str:
    if not off.get("requested", False):
        return "off (--no-offload)"
    on = [k for k, v in (off.get("enabled") or {}).items() if v is True]
    if not on:
        return "none (the host offered or accepted none)"
    lso = (off.get("enabled") or {}).get("lso_max_size", 0)
    return ", ".join(on) + (f"; LSO up to {lso} bytes" if lso else "")


def render_counters(counters: dict[str, int]) -> str:
    """The non-zero counters, one per line, sorted by name ("Counters: all zero" when none)."""
    shown = {k: v for k, v in sorted(counters.items()) if v}
    if not shown:
        return "Counters: all zero"
    return "Counters:\n" + "\n".join(f"  {k:<24} {v}" for k, v in shown.items())


def render_lifecycle(life: dict[str, Any]) -> str:
    """One line: where the NIC is in its life (running, re-initialising, waiting for the device),
    how often it was re-initialised and whether it persists through a rescind or a stopped channel."""
    reinits = int(life.get("reinits", 0))
    persist = "--persist" if life.get("persist") else "stops on a rescind or a stopped channel"
    return f"  state: {life['state']}, re-initialised {reinits} time{'' if reinits == 1 else 's'} ({persist})"
