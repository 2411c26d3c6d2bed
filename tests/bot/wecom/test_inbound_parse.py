"""parse_inbound over one fixture per payload WeCom sends, dedup keys, and invalid payloads."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.wecom.crypto import CallbackCrypto, CallbackError
from bot.wecom.parse import ParseError, parse_inbound

FIXTURES = Path(__file__).parents[2] / "fixtures" / "wecom"

EXT1 = "wmqPmRDQAAq7Wvr3yV0jsZQbLdBZBZbA"
EXT2 = "wmqPmRDQAAf3kT9xLc2NvHwE8YpUo1Rs"

# fixture → (kind, msg_type, event, change_type)
EXPECTED: dict[str, tuple[str, str, str | None, str | None]] = {
    "msg_text.xml": ("message", "text", None, None),
    "msg_image.xml": ("message", "image", None, None),
    "msg_voice.xml": ("message", "voice", None, None),
    "msg_video.xml": ("message", "video", None, None),
    "msg_location.xml": ("message", "location", None, None),
    "msg_link.xml": ("message", "link", None, None),
    "event_subscribe.xml": ("event", "event", "subscribe", None),
    "event_unsubscribe.xml": ("event", "event", "unsubscribe", None),
    "event_enter_agent.xml": ("event", "event", "enter_agent", None),
    "event_location.xml": ("event", "event", "LOCATION", None),
    "event_click.xml": ("event", "event", "click", None),
    "event_view.xml": ("event", "event", "view", None),
    "event_scancode_push.xml": ("event", "event", "scancode_push", None),
    "event_scancode_waitmsg.xml": ("event", "event", "scancode_waitmsg", None),
    "event_pic_sysphoto.xml": ("event", "event", "pic_sysphoto", None),
    "event_pic_photo_or_album.xml": ("event", "event", "pic_photo_or_album", None),
    "event_pic_weixin.xml": ("event", "event", "pic_weixin", None),
    "event_location_select.xml": ("event", "event", "location_select", None),
    "event_batch_job_result.xml": ("event", "event", "batch_job_result", None),
    "event_change_contact_create_user.xml": ("event", "event", "change_contact", "create_user"),
    "event_change_contact_update_user.xml": ("event", "event", "change_contact", "update_user"),
    "event_change_contact_delete_user.xml": ("event", "event", "change_contact", "delete_user"),
    "event_change_contact_create_party.xml": ("event", "event", "change_contact", "create_party"),
    "event_change_contact_update_party.xml": ("event", "event", "change_contact", "update_party"),
    "event_change_contact_delete_party.xml": ("event", "event", "change_contact", "delete_party"),
    "event_change_contact_update_tag.xml": ("event", "event", "change_contact", "update_tag"),
    "event_open_approval_change.xml": ("event", "event", "open_approval_change", None),
    "event_taskcard_click.xml": ("event", "event", "taskcard_click", None),
    "event_template_card_event.xml": ("event", "event", "template_card_event", None),
    "event_change_external_contact_add_external_contact.xml": (
        "event",
        "event",
        "change_external_contact",
        "add_external_contact",
    ),
    "event_change_external_contact_add_half_external_contact.xml": (
        "event",
        "event",
        "change_external_contact",
        "add_half_external_contact",
    ),
    "event_change_external_contact_edit_external_contact.xml": (
        "event",
        "event",
        "change_external_contact",
        "edit_external_contact",
    ),
    "event_change_external_contact_del_external_contact.xml": (
        "event",
        "event",
        "change_external_contact",
        "del_external_contact",
    ),
    "event_change_external_contact_del_follow_user.xml": (
        "event",
        "event",
        "change_external_contact",
        "del_follow_user",
    ),
    "event_change_external_contact_transfer_fail.xml": (
        "event",
        "event",
        "change_external_contact",
        "transfer_fail",
    ),
    "event_change_external_chat_create.xml": ("event", "event", "change_external_chat", "create"),
    "event_change_external_chat_update.xml": ("event", "event", "change_external_chat", "update"),
    "event_change_external_chat_update_del_member.xml": (
        "event",
        "event",
        "change_external_chat",
        "update",
    ),
    "event_change_external_chat_dismiss.xml": ("event", "event", "change_external_chat", "dismiss"),
    "event_change_external_tag_create.xml": ("event", "event", "change_external_tag", "create"),
    "event_change_external_tag_create_group.xml": (
        "event",
        "event",
        "change_external_tag",
        "create",
    ),
    "event_change_external_tag_update.xml": ("event", "event", "change_external_tag", "update"),
    "event_change_external_tag_delete.xml": ("event", "event", "change_external_tag", "delete"),
    "event_change_external_tag_shuffle.xml": ("event", "event", "change_external_tag", "shuffle"),
    "event_msgaudit_notify.xml": ("event", "event", "msgaudit_notify", None),
    "unknown_msgtype_file.xml": ("unknown", "file", None, None),
    "unknown_event_living_status_change.xml": ("unknown", "event", "living_status_change", None),
    "unknown_change_external_contact_future_change.xml": (
        "unknown",
        "event",
        "change_external_contact",
        "future_change_type",
    ),
}


def load(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_every_fixture_is_covered() -> None:
    assert {p.name for p in FIXTURES.glob("*.xml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses(name: str) -> None:
    xml = load(name)
    inbound = parse_inbound(xml)
    kind, msg_type, event, change_type = EXPECTED[name]
    assert (inbound.kind, inbound.msg_type, inbound.event, inbound.change_type) == (
        kind,
        msg_type,
        event,
        change_type,
    )
    assert inbound.to_user == "ww8a3f5c2e1b7d9046"
    assert inbound.from_user
    assert inbound.create_time.tzinfo is UTC
    assert inbound.create_time == datetime.fromtimestamp(int(inbound.fields["CreateTime"]), UTC)
    assert inbound.raw_xml == xml
    if inbound.msg_id is not None:
        assert inbound.dedup_key == f"msg:{inbound.msg_id}"
    elif inbound.kind == "event":
        assert inbound.dedup_key.startswith("evt:")
    else:
        assert inbound.dedup_key.startswith("raw:")


def test_messages_dedup_on_msg_id() -> None:
    for name in [n for n in EXPECTED if n.startswith("msg_")]:
        inbound = parse_inbound(load(name))
        assert inbound.msg_id and inbound.dedup_key == f"msg:{inbound.msg_id}"


def test_every_fixture_has_its_own_dedup_key() -> None:
    keys = [parse_inbound(load(name)).dedup_key for name in EXPECTED]
    assert len(set(keys)) == len(keys)


def test_customer_contact_events_come_from_sys_and_carry_no_agent() -> None:
    inbound = parse_inbound(load("event_change_external_contact_add_external_contact.xml"))
    assert inbound.from_user == "sys"
    assert inbound.agent_id is None
    assert inbound.text("UserID") == "zhangwei"
    assert inbound.text("ExternalUserID") == EXT1
    assert inbound.text("State") == "branch_lujiazui_poster_2024q2"
    assert inbound.text("WelcomeCode") == "CALLBACK_WELCOME_9Xk2mPq8Rt4Vw6Yz"


def test_fields_specific_to_customer_contact_events() -> None:
    transfer = parse_inbound(load("event_change_external_contact_transfer_fail.xml"))
    assert transfer.text("FailReason") == "customer_refused"
    deleted = parse_inbound(load("event_change_external_contact_del_external_contact.xml"))
    assert deleted.text("Source") == "DELETE_BY_TRANSFER"
    half = parse_inbound(load("event_change_external_contact_add_half_external_contact.xml"))
    assert half.text("WelcomeCode") and half.text("State") == "wealth_salon_0615"
    chat = parse_inbound(load("event_change_external_chat_update.xml"))
    assert chat.fields["MemChangeList"] == [EXT1, EXT2]
    assert (chat.text("UpdateDetail"), chat.text("JoinScene"), chat.text("MemChangeCnt")) == (
        "add_member",
        "3",
        "2",
    )
    one_member = parse_inbound(load("event_change_external_chat_update_del_member.xml"))
    assert one_member.fields["MemChangeList"] == [EXT2]  # a list even with one Item
    tag_group = parse_inbound(load("event_change_external_tag_create_group.xml"))
    assert tag_group.text("TagType") == "tag_group"
    shuffle = parse_inbound(load("event_change_external_tag_shuffle.xml"))
    assert shuffle.text("StrategyId") == "1" and shuffle.text("TagType") is None
    audit = parse_inbound(load("event_msgaudit_notify.xml"))
    assert audit.agent_id == "2000004"


def test_nested_elements_are_flattened_sensibly() -> None:
    location = parse_inbound(load("event_location_select.xml")).fields["SendLocationInfo"]
    assert location == {
        "Location_X": "39.908823",
        "Location_Y": "116.397470",
        "Scale": "15",
        "Label": "北京市西城区金融大街 35 号",
        "Poiname": "国际企业大厦",
    }
    scan = parse_inbound(load("event_scancode_push.xml")).fields["ScanCodeInfo"]
    assert scan == {"ScanType": "qrcode", "ScanResult": "https://siyu.example-bank.cn/c/8F3K2Q"}
    pics = parse_inbound(load("event_pic_sysphoto.xml")).fields["SendPicsInfo"]
    assert pics == {"Count": "1", "PicList": [{"PicMd5Sum": "1b5f7c23b5bf75682a53e7b6d163e185"}]}
    two_pics = parse_inbound(load("event_pic_photo_or_album.xml")).fields["SendPicsInfo"]
    assert len(two_pics["PicList"]) == 2
    job = parse_inbound(load("event_batch_job_result.xml")).fields["BatchJob"]
    assert job["JobType"] == "sync_user" and job["ErrCode"] == "0"
    approval = parse_inbound(load("event_open_approval_change.xml")).fields["ApprovalInfo"]
    assert approval["ApprovalNodes"][0]["Items"][0]["ItemUserId"] == "wangfang"
    assert approval["NotifyNodes"] == [
        {
            "ItemName": "李娜",
            "ItemUserId": "lina",
            "ItemImage": "https://wework.qpic.cn/wwhead/lina/0",
        }
    ]
    user = parse_inbound(load("event_change_contact_create_user.xml")).fields
    assert user["ExtAttr"] == [{"Name": "工号", "Type": "0", "Text": {"Value": "BJ02137"}}]


def test_agent_id_is_read_from_agentid_and_agentid_lowercase_d() -> None:
    assert parse_inbound(load("event_taskcard_click.xml")).agent_id == "1000002"
    assert parse_inbound(load("msg_text.xml")).agent_id == "1000002"


def test_text_content_is_kept_exactly() -> None:
    xml = load("msg_text.xml").replace(
        "<![CDATA[您好，请问这款稳健理财产品的业绩比较基准是多少？]]>",
        "<![CDATA[  两个空格开头\n换行 & <标签> ]]>",
    )
    assert parse_inbound(xml).text("Content") == "  两个空格开头\n换行 & <标签> "


def test_unknown_payloads_keep_every_field() -> None:
    file_msg = parse_inbound(load("unknown_msgtype_file.xml"))
    assert file_msg.fields["FileName"] == "客户风险测评问卷.pdf"
    assert file_msg.dedup_key == "msg:7380912345678901301"
    living = parse_inbound(load("unknown_event_living_status_change.xml"))
    assert living.fields["LivingId"] == "lvOQpTDwAAh0hxHsSeSReWil-OTbbvpg"
    assert living.dedup_key.startswith("raw:")


def test_repr_has_ids_but_no_content() -> None:
    inbound = parse_inbound(load("msg_text.xml"))
    assert "稳健理财" not in repr(inbound)
    assert "msg:7380912345678901001" in repr(inbound)
    assert inbound.log_context() == {
        "kind": "message",
        "msg_type": "text",
        "dedup_key": "msg:7380912345678901001",
        "msg_id": "7380912345678901001",
    }


# -- dedup keys ---------------------------------------------------------------------------


def add_contact_xml(
    *,
    user: str = "zhangwei",
    external: str = EXT1,
    ts: int = 1718000201,
    welcome: str = "CALLBACK_WELCOME_1",
) -> str:
    return (
        "<xml><ToUserName><![CDATA[ww8a3f5c2e1b7d9046]]></ToUserName>"
        "<FromUserName><![CDATA[sys]]></FromUserName>"
        f"<CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[change_external_contact]]></Event>"
        "<ChangeType><![CDATA[add_external_contact]]></ChangeType>"
        f"<UserID><![CDATA[{user}]]></UserID><ExternalUserID><![CDATA[{external}]]></ExternalUserID>"
        f"<State><![CDATA[poster]]></State><WelcomeCode><![CDATA[{welcome}]]></WelcomeCode></xml>"
    )


def test_identical_retries_share_a_dedup_key() -> None:
    for name in EXPECTED:
        xml = load(name)
        assert parse_inbound(xml).dedup_key == parse_inbound(xml).dedup_key


def test_retry_reencrypted_by_wecom_shares_the_dedup_key() -> None:
    """WeCom re-encrypts each retry with fresh randomness; the plaintext, and so the key, repeat."""
    crypto = CallbackCrypto(
        token="tok",
        encoding_aes_key="kY3vN8qR2tW6zB1dF5hJ9mP4sU7xA0cE3gI6lO9rT2w",
        receive_id="ww8a3f5c2e1b7d9046",
    )
    keys = set()
    for _ in range(3):
        body, sig = crypto.build_callback_body(
            add_contact_xml(),
            nonce="n",
            timestamp="1",
            to_user_name="ww8a3f5c2e1b7d9046",
            agent_id="1000002",
        )
        xml = crypto.decrypt_body(msg_signature=sig, timestamp="1", nonce="n", body=body)
        keys.add(parse_inbound(xml).dedup_key)
    assert len(keys) == 1


def test_two_customers_added_in_the_same_second_do_not_collide() -> None:
    first = parse_inbound(add_contact_xml(external=EXT1))
    second = parse_inbound(add_contact_xml(external=EXT2))
    assert first.from_user == second.from_user == "sys"
    assert first.create_time == second.create_time
    assert first.dedup_key != second.dedup_key


def test_same_customer_added_by_two_advisors_in_the_same_second_do_not_collide() -> None:
    assert (
        parse_inbound(add_contact_xml(user="zhangwei")).dedup_key
        != parse_inbound(add_contact_xml(user="lina")).dedup_key
    )


def test_different_change_types_in_the_same_second_do_not_collide() -> None:
    xml = add_contact_xml()
    edit = xml.replace("add_external_contact", "edit_external_contact")
    assert parse_inbound(xml).dedup_key != parse_inbound(edit).dedup_key


def test_welcome_code_is_not_part_of_the_key() -> None:
    assert (
        parse_inbound(add_contact_xml(welcome="A")).dedup_key
        == parse_inbound(add_contact_xml(welcome="B")).dedup_key
    )


def test_chat_updates_in_the_same_second_differ_by_membership_version() -> None:
    xml = load("event_change_external_chat_update.xml")
    later = xml.replace("71217227bbd112ecfe3a49c482195cb4", "0f0e0d0c0b0a09080706050403020100")
    assert parse_inbound(xml).dedup_key != parse_inbound(later).dedup_key


def test_tag_and_tag_group_with_same_id_do_not_collide() -> None:
    xml = load("event_change_external_tag_create.xml")
    group = xml.replace("<![CDATA[tag]]>", "<![CDATA[tag_group]]>")
    assert parse_inbound(xml).dedup_key != parse_inbound(group).dedup_key


def test_member_clicks_in_the_same_second_differ_by_event_key() -> None:
    xml = load("event_click.xml")
    other = xml.replace("MY_TODAY_SOP_TASKS", "MY_CUSTOMERS")
    assert parse_inbound(xml).dedup_key != parse_inbound(other).dedup_key


def test_dedup_key_ignores_formatting_of_the_xml() -> None:
    xml = add_contact_xml()
    pretty = re.sub(r"(</\w+>)(<)", r"\1\n  \2", xml).replace("<xml>", "<xml>\n  ")
    assert pretty != xml
    assert parse_inbound(xml).dedup_key == parse_inbound(pretty).dedup_key


# -- invalid payloads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xml", "needle"),
    [
        ("<xml><CreateTime>1718000001</CreateTime><FromUserName>u</FromUserName></xml>", "MsgType"),
        ("<xml><MsgType>text</MsgType><MsgId>1</MsgId></xml>", "CreateTime"),
        ("<xml><MsgType>text</MsgType><CreateTime>yesterday</CreateTime></xml>", "CreateTime"),
        ("<xml><MsgType>text</MsgType><CreateTime>-5</CreateTime></xml>", "CreateTime"),
        ("<xml><MsgType>text</MsgType><CreateTime>1.5</CreateTime></xml>", "CreateTime"),
        (
            "<xml><MsgType>text</MsgType><CreateTime>99999999999999999999</CreateTime></xml>",
            "CreateTime",
        ),
        ("<xml><MsgType><a>b</a></MsgType><CreateTime>1</CreateTime></xml>", "MsgType"),
    ],
)
def test_missing_or_invalid_required_fields_are_400(xml: str, needle: str) -> None:
    with pytest.raises(ParseError) as exc_info:
        parse_inbound(xml)
    assert isinstance(exc_info.value, CallbackError)
    assert (exc_info.value.status, exc_info.value.reason) == (400, "bad_callback")
    assert needle in str(exc_info.value)


def test_malformed_decrypted_xml_is_400() -> None:
    with pytest.raises(ParseError) as exc_info:
        parse_inbound("<xml><MsgType>text</MsgType>")
    assert (exc_info.value.status, exc_info.value.reason) == (400, "malformed_xml")


def test_entities_in_decrypted_xml_are_400() -> None:
    xml = (
        '<!DOCTYPE xml [<!ENTITY e "x">]><xml><MsgType>text</MsgType>'
        "<CreateTime>1</CreateTime><Content>&e;</Content></xml>"
    )
    with pytest.raises(ParseError) as exc_info:
        parse_inbound(xml)
    assert (exc_info.value.status, exc_info.value.reason) == (400, "xml_entities")
