"""Idiap Replay-Attack: ``train/ devel/ test/`` with ``real/`` and ``attack/{fixed,hand}/``; ``enroll/`` is skipped."""
from __future__ import annotations

from .base import DatasetIndexer, VideoRecord, match, split_parts

_SPLITS = {"train": "train", "devel": "devel", "test": "test"}
_LIGHTS = ("controlled", "adverse")
# attack medium -> the content names it may show, and the attack family
_MEDIA = {"print": (("highdef_photo",), "print"),
          "highdef": (("highdef_photo", "highdef_video"), "replay"),
          "mobile": (("mobile_photo", "mobile_video"), "replay")}
_REAL = r"client(\d{3})_session(\d{2})_webcam_authenticate_(controlled|adverse)_(\d+)\.mov"
_ATTACK = (r"attack_(print|highdef|mobile)_client(\d{3})_session(\d{2})_"
           r"((?:highdef|mobile)_(?:photo|video))_(controlled|adverse)\.mov")


class ReplayIndexer(DatasetIndexer):
    name = "replay"
    title = "Idiap Replay-Attack"
    domain = "I"
    expected_per_split = {"train": 360, "devel": 360, "test": 480}
    layout = """\
  ROOT/
    train/ devel/ test/
      real/client001_session01_webcam_authenticate_controlled_1.mov
      attack/fixed/attack_highdef_client001_session01_highdef_photo_adverse.mov
      attack/hand/attack_print_client001_session01_highdef_photo_controlled.mov
    enroll/   (not part of the anti-spoofing protocols: skipped)"""

    def split_dirs(self):
        return tuple(_SPLITS)

    def skip_reason(self, relpath):
        if split_parts(relpath)[0].lower() == "enroll":
            return "enroll/ is for face verification, not part of the anti-spoofing protocols"
        return None

    def place(self, relpath):
        parts = split_parts(relpath)
        split = _SPLITS.get(parts[0].lower())
        if split is None:
            return f"top folder {parts[0]!r} is not train, devel or test"
        if len(parts) == 3 and parts[1].lower() == "real":
            m = match(_REAL, parts[2])
            if not m:
                return "real video name does not follow client<NNN>_session<NN>_webcam_authenticate_<light>_<k>.mov"
            client, session, light, _ = m.groups()
            return VideoRecord(self.name, relpath, split, "live", "none", f"client{client}",
                               camera="webcam", session=session, light=light.lower())
        if len(parts) == 4 and parts[1].lower() == "attack" and parts[2].lower() in ("fixed", "hand"):
            m = match(_ATTACK, parts[3])
            if not m:
                return ("attack video name does not follow "
                        "attack_<medium>_client<NNN>_session<NN>_<content>_<light>.mov")
            medium, client, session, content, light = (g.lower() for g in m.groups())
            contents, attack = _MEDIA[medium]
            if content not in contents:
                return f"attack medium {medium!r} cannot show content {content!r}"
            return VideoRecord(self.name, relpath, split, "spoof", attack, f"client{client}",
                               attack_detail=f"{medium}_{content.split('_')[1]}", camera="webcam",
                               session=session, light=light, support=parts[2].lower())
        return "expected <split>/real/<name>.mov or <split>/attack/<fixed|hand>/<name>.mov"

    def expected_relpaths(self, records):
        expected = set()
        for split, client in {(r.relpath.split("/")[0], r.subject[len("client"):]) for r in records}:
            for light in _LIGHTS:
                for k in (1, 2):
                    expected.add(f"{split}/real/client{client}_session01_webcam_authenticate_{light}_{k}.mov")
                for support in ("fixed", "hand"):
                    for medium, (contents, _) in _MEDIA.items():
                        for content in contents:
                            expected.add(f"{split}/attack/{support}/attack_{medium}_client{client}"
                                         f"_session01_{content}_{light}.mov")
        return expected
