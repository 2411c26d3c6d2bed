"""Build the *training* corpus (train.jsonl) from seeded templates.

    .venv/bin/python -m compliance_nlp.training.build_corpus

Deterministic (seed 20240601). The labelled sets (dev.jsonl, dev2.jsonl, and dev3.jsonl,
dev4.jsonl and dev5.jsonl — the first three blind sets — and the held-out blind4.jsonl)
are NOT produced here: they were written by hand, with different phrasings and
vocabulary. ``train.py`` adds the dev pool to this corpus at training time (never a
blind set); nothing of them is copied into train.jsonl.

Three layers: the original templates (``T``, ``CLEAN_ADVISOR``, ``CUSTOMER``), the
slot grammar (``grammar.py``: concept paraphrases, their negated twins, service chat),
and the concept phrasebook (``phrasebook.py``) wrapped in openers, closers, a neutral
sentence on
either side and evasion spellings, with categories balanced and hard negatives in
proportion, so the model learns the concept rather than the template.

Record shape (the ``siyu nlp analyze`` shape plus labels):
``{"id", "text", "role", "intent", "sentiment", "violations": [{"category"}],
"pii": [{"type","start","end"}]}``
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from compliance_nlp.training import grammar
from compliance_nlp.training.phrasebook import (
    CLEAN_CORES,
    CLOSERS,
    CUSTOMER_CORES,
    NEGATING_FRAMES,
    NEUTRAL_SENTENCES,
    OPENERS,
    RELATIVES,
    VIOLATION_CORES,
    WECHAT_IDS,
)

SEED = 20240601
OUT = Path(__file__).resolve().parent / "train.jsonl"

PRODUCTS = [
    "这款理财",
    "这只基金",
    "这个产品",
    "这款年金险",
    "这期结构性存款",
    "这款增额寿",
    "这只债基",
    "这个固收+",
    "这款私募",
    "这个信托计划",
    "这款现金管理类产品",
    "这个资管计划",
    "这款分红险",
    "这款养老理财",
]
NAMES = ["王姐", "李总", "张哥", "刘阿姨", "陈先生", "赵女士", "孙老师", "周总", "吴姐", "郑叔"]
BANKS = [
    "工商银行",
    "建设银行",
    "农业银行",
    "中国银行",
    "交通银行",
    "招商银行",
    "兴业银行",
    "平安银行",
    "浦发银行",
    "中信证券",
    "华泰证券",
    "国泰君安",
    "中国人寿",
    "平安人寿",
    "太平洋保险",
    "易方达基金",
    "天弘基金",
    "某某消金",
]
PCTS = ["3.5%", "4%", "4.2%", "5%", "6%", "8%", "10%", "12%", "15%", "20%", "百分之五", "百分之八"]
POINTS = ["3个点", "4个点", "5个点", "6个点", "两个点", "一个点", "8个点"]
STOCKS = [
    "这只票",
    "600519",
    "宁德时代",
    "那只军工股",
    "这个科技股",
    "000001",
    "这只医药股",
    "这只券商股",
]
GIFTS = [
    "500元购物卡",
    "一桶油",
    "两瓶茅台",
    "一部手机",
    "1000块红包",
    "京东卡",
    "一个点的现金",
    "金条",
]
AMOUNTS = ["5万", "10万", "20万", "30万", "50万", "100万", "8000元", "3万块"]
DATES = ["3月15日", "下周三", "月底", "2024年6月30日", "明天上午", "本周五", "12月1日"]
EMOJI = ["😊", "👍", "🔥", "💰", "🙏", "✨"]

T: dict[str, list[str]] = {
    "guaranteed_return": [
        "{name}，{p}是保本保息的，您放心买",
        "{p}保本，到期连本带息都给您",
        "{p}稳赚不赔，闭着眼买都行",
        "放心，{p}年化至少{pct}，我给您保证",
        "{p}收益保证{pct}，比存款高多了",
        "买{p}，亏了算我的",
        "{name}您放心，亏了我来补",
        "这个钱放进去肯定赚，不会亏的",
        "{p}属于刚性兑付，到期一定兑付",
        "我跟您打包票，{p}零风险",
        "{p}保证收益，一年稳拿{pt}",
        "本金绝对安全，收益稳稳的{pct}",
        "亏损部分我个人补给您，放心",
        "这个{p}就是稳挣的，没有任何风险",
        "年化{pct}妥妥的，跑不了",
        "最差也有{pct}，保底收益",
        "{p}旱涝保收，到期保本",
        "差价我补，您就放心投{amt}",
    ],
    "misleading_promotion": [
        "{p}跟存款一样，就是利息高点",
        "{p}和定期存款一样安全，收益还高",
        "您就当存定期，{p}比存款还稳",
        "{p}绝对安全，全网收益最高",
        "这是史上最高收益的{p}，闭眼买",
        "去年{p}收益{pct}，今年肯定也不会低于这个数",
        "{p}过去三年都赚{pct}，未来一定也能做到",
        "{p}下个月停售，赶紧上车",
        "最后几个名额了，错过再等一年",
        "风险提示走个形式，您不用看",
        "合同不用细看，直接签字就行",
        "{p}风险几乎为零，您放心",
        "这款是国家兜底的，不会出问题",
        "{p}从来没亏过，买了就赚",
        "{p}只涨不跌，随便买都赚",
        "内部额度，只给老客户，马上抢光",
    ],
    "off_book_dealing": [
        "钱先转到我个人账户，我帮您统一买",
        "您直接打到我卡上就行，我来操作",
        "{amt}转我微信，我帮您买{p}",
        "这个产品不走公司系统，我们私下签个协议",
        "行里系统查不到，是我朋友公司的产品",
        "{p}是我私人渠道拿的额度，收益高",
        "这里不方便说，加我私人微信聊",
        "加我VX，细节私聊",
        "加我薇信，这边不好说",
        "咱们换个地方聊，别在企业微信里说",
        "聊天记录删了吧，别留痕",
        "私下交易手续费低，不用走流程",
        "现金给我就行，我帮您存进去",
        "加v详聊，给您个内部价",
        "威信号发您了，加一下私聊",
        "线下签个协议就行，不用录入系统",
    ],
    "improper_inducement": [
        "买{amt}{p}，我私下返您{pt}",
        "您在我这买，我额外送您{gift}",
        "首年保费返您{pct}，别人不知道",
        "手续费我帮您出，您只管买",
        "签了这单给您包个大红包",
        "佣金分您一半，够意思吧",
        "买满{amt}我个人再送{gift}",
        "这单成了给您返现{pt}",
        "存{amt}就送您{gift}，私下给",
        "回扣我给您留着，下次见面给您",
        "我自掏腰包补贴您{pct}的收益",
    ],
    "suitability_evasion": [
        "风险测评我帮您做，您不用管",
        "问卷我帮您填好了，签个字就行",
        "测评的时候都选最激进的选项",
        "照我说的选，最后一题选D就行",
        "您测评是保守型，改成进取型就能买了",
        "等级不够也能买，签个不匹配确认书就行",
        "双录的时候就说是您自己要买的",
        "录像时照着念，问您是否了解就说了解",
        "风险等级不用管，{p}谁都能买",
        "重新测一下就能买，测高一点",
        "年龄填小一点，收入填高一点",
        "别说是我推荐的，就说是您自己决定的",
        "双录走个过场，都答是就行",
        "用您家人的名义买，测评就能过",
    ],
    "account_custody": [
        "您把验证码发我一下，我帮您操作",
        "密码告诉我，我帮您登手机银行",
        "U盾放我这，我帮您随时操作",
        "您的卡放我这保管，方便给您转账",
        "账户交给我打理，买卖我来决定",
        "把交易密码发给我，我替您下单",
        "您忙的话全权委托给我，我帮您买卖",
        "身份证放我这，我帮您去办",
        "收到短信验证码报给我就行",
        "手机银行我帮您登一下，您把密码给我",
        "我远程帮您操作账户，您别管了",
    ],
    "insider_tip": [
        "内部消息，{s}下周有重组",
        "{s}明天肯定涨停，赶紧买",
        "庄家要拉{s}了，至少翻倍",
        "可靠消息，{s}利好还没公布",
        "{s}一定会涨，现在就是底部",
        "我朋友在公司里，内幕消息说要被收购了",
        "主力要拉升，{s}必涨",
        "{s}马上大涨，满仓干",
        "{s}绝对涨，我保证",
        "大资金要进{s}，这周就会拉升",
    ],
    "disparagement": [
        "{b}快倒闭了，钱赶紧转我们这",
        "{b}的理财都是坑，别买",
        "{b}那边都是骗子，忽悠人的",
        "别家银行的产品都不靠谱",
        "{b}要暴雷了，听我的赶紧撤",
        "其他保险公司都是坑人的，理赔难",
        "{b}的客户经理不专业，都是忽悠",
        "他们家要完了，资不抵债",
        "同行的产品都是垃圾，比不上我们",
    ],
}

CLEAN_ADVISOR = [
    "{name}您好，{p}业绩比较基准{pct}，不代表未来收益，请您知悉",
    "理财非存款，产品有风险，投资须谨慎。",
    "本产品不保证本金和收益，过往业绩不代表未来表现",
    "{p}是非保本浮动收益型产品，风险等级R2",
    "我没法跟您保证不会亏，市场有波动",
    "低风险不等于没有风险，您要根据自己情况决定",
    "别信网上那些“稳赚不赔”的宣传，都是骗局",
    "存款保险保障的是存款本息，每家银行最高50万元",
    "{p}合同约定的保证利率是2.5%，分红部分不确定，以实际为准",
    "请确保本人操作，不要把验证码告诉任何人",
    "银行工作人员不会索要您的密码和验证码",
    "您是想要保本的产品吗？我们有大额存单和国债",
    "大额存单属于存款，受存款保险保护",
    "风险测评需要您本人在手机银行完成",
    "您的风险测评已过期，麻烦重新做一下",
    "双录是监管要求，请您如实回答每个问题",
    "您好，{p}{date}开放申购，起购金额1万元",
    "您的{amt}定期{date}到期，需要帮您看看续存方案吗",
    "有问题可以拨打客服热线95588咨询",
    "理赔资料请通过官方APP上传，我们会尽快处理",
    "{p}近一年净值波动在3%以内，历史数据不预示未来",
    "股市有风险，我们不对个股涨跌做预测",
    "各家银行产品各有特点，您可以比较后再决定",
    "感谢{name}的信任，有需要随时联系我",
    "{name}新年快乐，祝您身体健康",
    "这款产品不是存款，和存款有本质区别",
    "所谓“保本理财”早就没有了，资管新规之后都是净值型",
    "我们不能承诺收益，以产品说明书为准",
    "您可以关注我们的官方微信公众号获取资讯",
    "{p}的费率是申购费0.15%，持有满7天免赎回费",
    "{name}，您的风险等级是C3，可以购买R3及以下产品",
    "购买前请仔细阅读合同条款，特别是免责部分",
    "这款增额寿的现金价值表在合同第12页，您可以看一下",
    "没有人能保证一定涨，建议分散配置",
    "订单号20240315889900已受理，请耐心等待",
    "保单号P440112202403150018的保费已扣款成功",
    "您好，活动详情请以官方公告为准",
    "本活动由银行统一组织，礼品以活动规则为准，无需额外费用",
    "投资者教育：警惕冒充客户经理索要验证码的诈骗",
    "今天市场调整，您持有的{s}跌了2%，建议不要追涨杀跌",
]

CUSTOMER: dict[str, list[str]] = {
    "product_inquiry": [
        "{p}收益怎么样？",
        "{p}风险大吗",
        "有没有期限短一点的理财",
        "{p}封闭期多久？",
        "大额存单现在利率多少",
        "这个基金的费率是多少",
        "{p}和定期比哪个好",
        "有什么稳健一点的产品推荐吗",
        "年金险和增额寿有什么区别",
        "{p}起购金额是多少",
        "收益有保证吗？",
        "{p}是保本的吗",
        "最近有什么新发的理财",
        "国债什么时候发行",
        "这个产品的风险等级是多少",
        "介绍一下{p}吧",
        "养老理财靠谱吗",
        "{p}业绩比较基准多少",
    ],
    "purchase_intent": [
        "我想买{amt}{p}",
        "帮我预约一下{p}",
        "我要买那个{pct}的产品",
        "怎么在手机银行上买{p}",
        "给我留一个额度，明天去网点",
        "我决定投保了，怎么操作",
        "我再追加{amt}",
        "定投每月2000可以吗，我想开始",
        "我要认购新发的那只基金",
        "想给孩子买一份教育金",
        "那就买{amt}吧",
        "下单了，您看下有没有成功",
        "我要办一个大额存单，{amt}",
    ],
    "redemption_intent": [
        "我想把{p}赎回",
        "帮我把钱全部转出来",
        "这个保险我想退保",
        "我要销户，以后不在你们这存了",
        "{p}怎么提前赎回",
        "基金全部卖掉吧",
        "定期能提前支取吗，我急用钱",
        "我不想买了，能退吗",
        "把余额宝那个转出去",
        "我要把{amt}取出来",
        "年金险退保能退多少钱",
        "帮我清仓吧",
        "账户注销需要什么手续",
    ],
    "complaint": [
        "你们这是什么服务态度，我要投诉",
        "当初说不会亏，现在亏了{pct}，你们骗人",
        "乱扣我手续费，给个说法",
        "再这样我打12378投诉了",
        "客户经理电话一直打不通，太差了",
        "你们就是忽悠人买的",
        "理赔拖了两个月没人管，我要找监管",
        "销售误导，我要求全额退款",
        "天天发广告，烦死了，别再发了",
        "卡被冻结也不通知，太过分了",
        "说好的收益根本没有，骗子",
    ],
    "account_service": [
        "手机银行登不上了怎么办",
        "我要改一下预留手机号",
        "卡丢了怎么挂失",
        "网银密码忘了",
        "帮我开一个证券账户",
        "转账限额怎么调高",
        "需要打一份流水证明",
        "身份证过期了要更新吗",
        "U盾怎么激活",
        "怎么绑定另一张卡",
        "我的账户为什么被冻结了",
        "开通手机银行需要去网点吗",
        "对账单在哪里看",
    ],
    "claim_service": [
        "我住院了，怎么申请理赔",
        "理赔需要哪些材料",
        "车险出险了怎么报案",
        "医疗费发票丢了还能报销吗",
        "理赔款什么时候到账",
        "我爸确诊了，重疾险怎么赔",
        "意外险能赔门诊吗",
        "理赔进度怎么查",
        "诊断证明要原件吗",
        "报案后多久定损",
    ],
    "risk_assessment": [
        "风险测评在哪里做",
        "我的风险等级是什么",
        "测评过期了怎么重新做",
        "为什么我测出来是保守型",
        "风险评估问卷怎么填",
        "我想重新做一下风险测评",
        "C3能买R4的产品吗",
        "风险承受能力测评多久有效",
        "测评结果能改吗",
    ],
    "chitchat": [
        "好的谢谢",
        "收到",
        "早上好",
        "{name}新年快乐",
        "在吗",
        "哈哈哈好的",
        "辛苦了",
        "今天天气真好",
        "嗯嗯",
        "周末愉快呀",
        "吃饭了吗",
        "晚安",
        "好的，知道了",
        "谢谢提醒",
        "😊",
        "明白",
    ],
}

CUSTOMER_MORE: dict[str, list[str]] = {
    "product_inquiry": [
        "{p}最近表现如何",
        "{p}适合退休老人吗",
        "{p}能随时取出来吗",
        "{p}到期收益怎么算",
        "一年期的理财现在大概多少收益",
        "{p}有手续费吗",
        "{p}投资的是什么",
        "{p}亏过钱吗",
        "你们行有没有R1的产品",
        "{p}流动性怎么样",
        "{p}的历史业绩能发我看看吗",
        "养老金买什么比较合适",
        "{p}是净值型的吗",
        "{p}多久分一次红",
        "有没有适合小孩的教育金保险",
        "什么产品利息高一点",
    ],
    "purchase_intent": [
        "{p}还能买吗，我想入{amt}",
        "帮我下一单{p}",
        "我打算买{p}，怎么付款",
        "给我办一份{p}",
        "我想投{amt}进去",
        "周末能去网点认购吗，我要买",
        "{p}我要了",
        "我现在就想买，给个链接",
        "那我先买{amt}试试",
        "帮我锁定额度，马上转钱",
        "准备给父母配置一份保险",
        "我想开始做基金定投",
        "确定了，就买这个",
        "{date}我过来签合同",
    ],
    "redemption_intent": [
        "{p}到期后别续了",
        "我要把{amt}赎回来",
        "能不能帮我把基金卖了",
        "保单不要了，怎么退",
        "我要把钱转到别家",
        "{p}可以提前退出吗",
        "我打算全部撤出来",
        "定期提前取出利息怎么算",
        "这个账户我不用了，帮我销掉",
        "减仓一半",
        "{date}前把钱转出来",
        "犹豫期内我要退保",
        "把理财的钱取回来",
        "我要解约",
    ],
    "complaint": [
        "你们怎么能这样做事",
        "我对你们的服务很不满意",
        "这都第三次了还没解决，太失望了",
        "亏了这么多，当初为什么不说清楚风险",
        "你们乱收费，我要举报",
        "我要投诉你们客户经理",
        "我要向消保部门反映",
        "你们的客服态度太恶劣了",
        "一直推诿扯皮，到底谁负责",
        "骗我买了这个，现在取不出来",
        "我被误导了，要求赔偿",
        "再不处理我就去媒体曝光",
        "电话打了十几个没人接，什么破银行",
    ],
    "account_service": [
        "我想修改交易密码",
        "怎么开通网上银行",
        "{date}能去网点办卡吗",
        "我的卡被锁了",
        "帮我查一下账户余额",
        "怎么设置转账限额",
        "手机号换了收不到验证码",
        "怎么申请电子对账单",
        "社保卡怎么激活",
        "密码输错三次了怎么办",
        "我想把借记卡升级",
        "怎么开通短信提醒",
        "APP上怎么修改地址",
        "信用卡额度能提高吗",
    ],
    "claim_service": [
        "我出车祸了，保险怎么赔",
        "理赔申请提交了吗",
        "住院花了两万，能报多少",
        "理赔资料要寄到哪",
        "医疗险报销流程是什么",
        "保险公司什么时候赔钱",
        "我要申请理赔",
        "意外受伤怎么报案",
        "理赔审核要多久",
        "重疾理赔需要什么证明",
        "报销单据有什么要求",
    ],
    "risk_assessment": [
        "风险测评怎么做",
        "我想重新测评一下风险等级",
        "我的风险评估结果是什么",
        "测评做完了吗",
        "风险等级不够怎么办",
        "测评能在手机上做吗",
        "为什么要做风险评估",
        "问卷要填多久",
        "测评结果多久过期",
        "我要更新风险测评",
    ],
    "chitchat": [
        "好的",
        "谢谢啦",
        "没问题",
        "知道啦",
        "下次再聊",
        "您也辛苦了",
        "好呀",
        "哈哈",
        "OK",
        "嗯",
        "早",
        "节日快乐",
        "好的收到，谢谢",
    ],
}
PREFIXES = [
    "",
    "",
    "",
    "你好，",
    "您好，",
    "请问",
    "麻烦问下，",
    "小王，",
    "经理，",
    "在吗？",
    "那个，",
    "我想问一下，",
]
SUFFIXES = ["", "", "", "？", "。", "，谢谢", "，麻烦了", "！", "，急", "啊"]

SENT = {
    "complaint": "negative",
}

NON_PII = [
    "订单号20240315889900123已提交",
    "合同编号HT-2024-0088123，请妥善保存",
    "保单号P440112202403150018",
    "客服热线95588，信用卡中心400-820-8888",
    "{s}今天涨了3.2%，成交额120亿",
    "产品代码 510300，起购1万元",
    "基金代码000001，净值1.2345",
    "转账金额138000元已到账",
    "2024年3月15日到期，本息合计105800元",
    "流水号6228480402564890018",
    "交易编号62220202000012345",
    "快递单号SF1234567890123",
    "您的积分是13800分",
    "持仓600519，成本价1688",
    "理赔案件号CL2024031500012345",
]


def _evasion(text: str, rng: random.Random) -> str:
    """Spell a violating line the way people dodge keyword filters."""
    import opencc

    choice = rng.randrange(5)
    if choice == 0:
        return str(opencc.OpenCC("s2t").convert(text))
    if choice == 1:
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    if choice == 2:
        sep = rng.choice([".", " ", "*", "·", "-"])
        chars = list(text)
        for i in range(len(chars) - 1, 0, -1):
            if (
                rng.random() < 0.3
                and "\u4e00" <= chars[i] <= "\u9fff"
                and "\u4e00" <= chars[i - 1] <= "\u9fff"
            ):
                chars.insert(i, sep)
        return "".join(chars)
    if choice == 3:
        return text + rng.choice(EMOJI) * rng.randint(1, 3) + "！！！"
    return text.replace("，", rng.choice(["，", "~~", "!!"]), 1)


def _fill(tpl: str, rng: random.Random) -> str:
    return tpl.format(
        rel=rng.choice(RELATIVES),
        wx=rng.choice(WECHAT_IDS),
        amt2=rng.choice(["500块", "2000元", "一千", "三百", "5000"]),
        p=rng.choice(PRODUCTS),
        name=rng.choice(NAMES),
        b=rng.choice(BANKS),
        pct=rng.choice(PCTS),
        pt=rng.choice(POINTS),
        s=rng.choice(STOCKS),
        gift=rng.choice(GIFTS),
        amt=rng.choice(AMOUNTS),
        date=rng.choice(DATES),
    )


def _phone(rng: random.Random) -> str:
    return rng.choice(["138", "139", "150", "186", "177", "199", "135"]) + "".join(
        str(rng.randrange(10)) for _ in range(8)
    )


def _luhn_complete(prefix: str) -> str:
    for d in range(10):
        digits = prefix + str(d)
        total = 0
        for i, ch in enumerate(reversed(digits)):
            v = int(ch) * (2 if i % 2 else 1)
            total += v - 9 if v > 9 else v
        if total % 10 == 0:
            return digits
    raise AssertionError


def _card(rng: random.Random) -> str:
    prefix = rng.choice(["622202", "622848", "621700", "622588", "623668"])
    return _luhn_complete(prefix + "".join(str(rng.randrange(10)) for _ in range(18 - len(prefix))))


def _id_number(rng: random.Random) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    body = (
        rng.choice(["110101", "310104", "440106", "330102", "510107"])
        + f"{rng.randint(1955, 2003)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        + f"{rng.randint(0, 999):03d}"
    )
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


def _pii_line(rng: random.Random) -> tuple[str, list[dict[str, Any]]]:
    kind = rng.choice(["phone", "id_card", "bank_card", "email", "phone"])
    if kind == "phone":
        value = _phone(rng)
        if rng.random() < 0.3:
            value = f"{value[:3]}-{value[3:7]}-{value[7:]}"
        if rng.random() < 0.2:
            value = "+86 " + value
        tpl = rng.choice(
            ["我的手机号是{v}", "电话{v}，有事打我", "联系方式：{v}", "预留手机改成{v}"]
        )
    elif kind == "id_card":
        value = _id_number(rng)
        tpl = rng.choice(["身份证号{v}", "我的证件号码是{v}，帮我查一下", "身份证：{v}"])
    elif kind == "bank_card":
        value = _card(rng)
        tpl = rng.choice(["卡号{v}", "转到这张卡{v}", "我的银行卡是{v}，扣款失败了"])
    else:
        value = (
            rng.choice(["wanglei", "li.na88", "zhang_wei", "chenfang2020"])
            + "@"
            + rng.choice(["qq.com", "163.com", "example.cn"])
        )
        tpl = rng.choice(["邮箱{v}，把合同发我", "对账单发到{v}"])
    text = tpl.format(v=value)
    start = text.index(value)
    return text, [{"type": kind, "start": start, "end": start + len(value)}]


# Per-category target for the phrasebook layer: categories with fewer concepts get more
# samples per core, so no category is learned as "rare".
_PER_CATEGORY = 520
_CLEAN_TOTAL = 3600
_NEGATED_TOTAL = 1200
_CUSTOMER_PER_INTENT = 420


def _wrap(core: str, rng: random.Random) -> str:
    """Opener/closer, sometimes a neutral sentence before or after the core."""
    text = _fill(rng.choice(OPENERS), rng) + core + rng.choice(CLOSERS)
    roll = rng.random()
    if roll < 0.15:
        text = _fill(rng.choice(NEUTRAL_SENTENCES), rng) + "，" + text
    elif roll < 0.25:
        text = text.rstrip("。！~") + "。" + _fill(rng.choice(NEUTRAL_SENTENCES), rng)
    return text


def _concept_rows(rng: random.Random, add: Any) -> None:
    for category, cores in VIOLATION_CORES.items():
        for k in range(_PER_CATEGORY):
            text = _wrap(_fill(cores[k % len(cores)], rng), rng)
            if rng.random() < 0.25:
                text = _evasion(text, rng)
            add(text, "advisor", violations=[{"category": category}])
    for k in range(_CLEAN_TOTAL):
        add(_wrap(_fill(CLEAN_CORES[k % len(CLEAN_CORES)], rng), rng), "advisor")
    all_cores = [c for cores in VIOLATION_CORES.values() for c in cores]
    for _ in range(_NEGATED_TOTAL):
        core = _fill(rng.choice(all_cores), rng).rstrip("。！")
        add(rng.choice(NEGATING_FRAMES).format(core=core), "advisor")
    for intent, cores in CUSTOMER_CORES.items():
        for k in range(_CUSTOMER_PER_INTENT):
            text = _fill(cores[k % len(cores)], rng)
            if intent != "chitchat" or rng.random() < 0.3:
                text = rng.choice(PREFIXES) + text.rstrip("？?") + rng.choice(SUFFIXES)
            add(text, "customer", intent=intent, sentiment=SENT.get(intent))


# Third pass (``grammar.py``): slot-composed paraphrases per concept, their negated
# twins, and ordinary service chat as the bulk of the clean class. Its own RNG, so the
# earlier layers generate exactly what they did before.
_GRAMMAR_PER_CATEGORY = 600
_GRAMMAR_SERVICE = 4000
_GRAMMAR_NEGATED = 1600
_GRAMMAR_PER_INTENT = 260


def _grammar_rows(rng: random.Random, add: Any) -> None:
    for text, category in grammar.violation_lines(rng, _GRAMMAR_PER_CATEGORY):
        add(text, "advisor", violations=[{"category": category}])
    for text in grammar.clean_lines(rng, _GRAMMAR_SERVICE, _GRAMMAR_NEGATED):
        add(text, "advisor")
    for text, intent in grammar.customer_lines(rng, _GRAMMAR_PER_INTENT):
        add(text, "customer", intent=intent, sentiment=SENT.get(intent))


def build(seed: int = SEED) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []

    def add(text: str, role: str, **labels: Any) -> None:
        rows.append(
            {
                "id": f"t{len(rows):05d}",
                "text": text,
                "role": role,
                "intent": labels.get("intent"),
                "sentiment": labels.get("sentiment"),
                "violations": labels.get("violations", []),
                "pii": labels.get("pii", []),
            }
        )

    for category, templates in T.items():
        for tpl in templates:
            for _ in range(12):
                text = _fill(tpl, rng)
                if rng.random() < 0.3:
                    text = _evasion(text, rng)
                add(text, "advisor", violations=[{"category": category}])
    for tpl in CLEAN_ADVISOR:
        for _ in range(14):
            add(_fill(tpl, rng), "advisor")
    for intent, templates in CUSTOMER.items():
        for tpl in templates + CUSTOMER_MORE[intent]:
            for _ in range(8):
                text = _fill(tpl, rng)
                if intent != "chitchat" or rng.random() < 0.3:
                    text = rng.choice(PREFIXES) + text.rstrip("？?") + rng.choice(SUFFIXES)
                add(text, "customer", intent=intent, sentiment=SENT.get(intent))
    _concept_rows(rng, add)
    for _ in range(120):
        text, pii = _pii_line(rng)
        add(text, "customer", intent="account_service", pii=pii)
    for tpl in NON_PII:
        for _ in range(4):
            add(_fill(tpl, rng), rng.choice(["advisor", "customer"]))
    _grammar_rows(random.Random(seed + 1), add)
    rng.shuffle(rows)
    return rows


def main() -> None:
    rows = build()
    with OUT.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
