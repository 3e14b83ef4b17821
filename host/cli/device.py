"""``host device pack``: the device side as one zipapp file."""

from __future__ import annotations

from pathlib import Path

from edgeshrink.host.cli.args import add_option


def register(sub) -> None:
    dv = sub.add_parser("device", help="the device-side program").add_subparsers(dest="device_cmd", required=True)
    pk = dv.add_parser("pack", help="write device/ as one runnable zipapp (python3 edgeshrink-device.pyz ...)")
    add_option(pk, ["--out-pyz"], old=("-o", "--out"), dest="out_pyz", default="edgeshrink-device.pyz",
               metavar="F.pyz", help="the zipapp to write (default edgeshrink-device.pyz)")
    pk.set_defaults(func=cmd_device_pack)


def cmd_device_pack(args) -> int:
    from edgeshrink.host.remote.pack import pack_device

    info = pack_device(args.out_pyz)
    print(f"{args.out_pyz}: {info['files']} files, {info['bytes']} bytes, device/ sha256 {info['device_sha256'][:12]}; "
          f"run it on the board with: python3 {Path(args.out_pyz).name} backends")
    return 0
