"""Paraphrase grammar: one concept, many surface forms (third pass of the corpus).

The second blind set (now dev4) showed the model still knew *phrasings*: it was right
about lines close to the phrasebook and confidently wrong about ordinary service chat
(「好的收到，我下午给您回个电话」 read as off-book dealing at 0.99). So each concept
below is a small grammar — who does it, to whom, which product, what number, which
register (plain, slang, pinyin initials, 「你懂的」 winks, emoji) — and every violating
concept has a *negated/warned/asked* twin built from the same slots, so the words alone
never decide the label: the frame around them does. Ordinary service chat (schedules,
card expiry, claim progress, product facts with numbers) is generated in bulk as the
clean class, because that is most of what advisors send.

None of these lines is a dev-set line; dev misses were read as concepts, and each
concept is expressed here through slots that no annotator wrote.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

__all__ = ["clean_lines", "customer_lines", "violation_lines"]

Slots = dict[str, list[str]]

S: Slots = {
    "me": ["我", "我个人", "我这边", "我自己", "我们团队", "小王我", "咱这边"],
    "you": ["您", "你", "姐", "哥", "阿姨", "叔", "老板", "亲"],
    "prod": [
        "这款理财",
        "这只基金",
        "这个产品",
        "这款年金",
        "这期结构性存款",
        "这款增额寿",
        "这个固收+",
        "这款私募",
        "这个信托",
        "这个资管计划",
        "这款分红险",
        "这款养老理财",
        "这单",
        "这个项目",
        "这期",
        "这款重疾险",
        "这款净值型理财",
        "这只债基",
        "这个票据产品",
    ],
    "pct": [
        "3.5%",
        "4%",
        "4.2%",
        "4.5",
        "5个点",
        "6%",
        "百分之八",
        "3个点",
        "4个点",
        "七个点",
        "10%",
    ],
    "amt": ["5万", "10万", "20万", "50万", "100万", "8000块", "3万", "两万"],
    "time": ["今天", "明天", "今晚", "下午三点前", "周五前", "这周", "月底前", "这两天", "下班前"],
    "rival": [
        "隔壁银行",
        "那家券商",
        "X行",
        "某A银行",
        "XX保险",
        "那家基金公司",
        "城商行",
        "小保险公司",
        "gh",
        "js那边",
        "他们家",
        "互联网平台",
        "那家信托",
        "别的保司",
        "农商行",
    ],
    "stock": ["这只票", "这个板块", "大盘", "军工", "这只股", "600XXX", "白酒板块", "那只科技股"],
    "emoji": ["", "", "", "", "😊", "👍", "🔥", "💰", "😉", "🤫", "😂", "🚀", "🙏", "👌", "✌️"],
    "end": [
        "",
        "",
        "",
        "哈",
        "哦",
        "啊",
        "呢",
        "的",
        "~",
        "！",
        "。",
        "，放心",
        "，你懂的",
        "，别声张",
    ],
    "open": [
        "",
        "",
        "",
        "",
        "跟您说实话，",
        "悄悄说，",
        "放心，",
        "您听我的，",
        "实话讲，",
        "说白了，",
        "嗯，",
        "对的，",
        "这么说吧，",
        "私下跟您讲，",
    ],
}

# (category, template) — {slot} names come from ``S`` or the category's own slots.
V: dict[str, Slots] = {
    "guaranteed_return": {
        "t": [
            "{prod}收益{promise}{pct}，到期{pay}",
            "年化{pct}是{locked}的，到期{pay}",
            "{pct}{locked}，{pay}",
            "到期拿不到{pct}，{blame}",
            "要是亏了，{blame}",
            "跌了算我的，赚了算{you}的",
            "{prod}本金{zero}，{pct}{locked}",
            "{slang}的，{pay}",
            "出了问题{backer}兜着，{pay}",
            "{prod}{backer}兜底，本金{zero}",
            "100%兑付，本金{zero}",
            "收益差多少，{me}{cover}",
            "{prod}就是{slang}，收益{pct}{locked}",
            "{prod}稳赚，{pct}{locked}",
            "{me}保证{you}一年{pct}，少一分{blame2}",
        ],
        "promise": ["承诺到", "保证", "稳稳", "定死", "至少", "最少", "保底", "打包票", "锁定"],
        "locked": [
            "锁死",
            "定死",
            "板上钉钉",
            "跑不掉",
            "少不了",
            "稳稳到手",
            "妥妥",
            "铁定",
            "没跑",
        ],
        "pay": ["按这个数给您打款", "连本带息一分不少", "本息一起回您卡上", "肯定兑付", "照付不误"],
        "blame": [
            "直接找我",
            "我个人负责",
            "我补给您",
            "我自掏腰包补",
            "算我的",
            "差的我来补",
            "我负责到底",
        ],
        "blame2": ["我补", "找我", "算我的"],
        "zero": ["零损失", "🈚️风险", "没有任何风险", "绝对安全", "不可能亏", "亏不了", "稳稳的"],
        "backer": ["上面", "公司", "总行", "我们", "国家", "股东", "担保公司"],
        "cover": ["给您补齐", "私下补给您", "从提成里补", "垫上", "兜着"],
        "slang": ["bb", "保本保息", "gang兑", "刚兑", "保本", "稳赚不赔", "包赚"],
    },
    "misleading_promotion": {
        "t": [
            "{time}是最后一天了，过了{time2}再也买不到{thing}",
            "名额{tight}，{time}不打款就没了，{me}先帮您占一个",
            "{prod}{since}一直在涨，{go}",
            "{prod}从来没亏过，{go}",
            "{prod}{what}，{cover}",
            "{prod}就是{deposit}的{upgrade}，{safer}",
            "{prod}跟{deposit}一样，{safer}",
            "{prod}零风险，{go}",
            "风险提示{ignore}，{go}",
            "去年赚了{pct}，今年{sure}也{same}",
            "{prod}是全市场{best}，{go}",
            "额度{tight}，{time}就{close}",
        ],
        "thing": ["这个利率", "这个收益", "这么好的产品", "这个价"],
        "time2": ["今天", "这周", "这村", "今晚"],
        "tight": ["真的很紧", "就剩几个", "快抢完了", "只剩最后一点", "马上没了"],
        "since": ["成立到现在", "这几年", "上线以来", "发行以来"],
        "go": ["放心大胆买", "闭眼入", "买了就赚", "随便买", "直接上车"],
        "what": ["重疾险", "这款医疗险", "这个意外险"],
        "cover": ["啥病都赔", "只要住院就能理赔", "什么情况都能赔", "没有免责条款"],
        "deposit": ["定期", "大额存单", "存款", "国债", "余额宝"],
        "upgrade": ["升级版", "高级版", "加强版", "Plus版"],
        "safer": ["还更安全", "一样安全", "门槛高一点而已", "利息还高", "随时能取"],
        "ignore": ["走个形式", "不用看", "都是套话", "您别当回事"],
        "sure": ["肯定", "一定", "保准", "必然"],
        "same": ["差不了", "这个数", "能做到", "只多不少"],
        "best": ["收益最高的", "最稳的", "独一份", "最安全的"],
        "close": ["停售", "关门", "没了", "涨价"],
    },
    "off_book_dealing": {
        "t": [
            "{money}别交到公司账户，直接转我，{me}帮您{handle}",
            "转我{acct}就行，系统那边我来搞定",
            "{acct}收款，{offline}，{wink}",
            "这是{me}{own}的项目，不用经过{hq}审批",
            "{prod}不走公司系统，{offline}",
            "钱打到{acct}，{me}帮您{handle}",
            "我有个客户急用钱，{you}借他{amt}，月息{rate}，我做担保",
            "{prod}是我从外面拿的，行里查不到，{wink}",
            "{money}先给我，我线下帮您{handle}",
            "这边不方便说，加我{vx}细聊",
            "{amt}走我个人{pay}，比走行里快",
        ],
        "money": ["保费", "认购款", "钱", "本金", "首付款", "这笔钱"],
        "handle": ["代缴", "统一买", "操作", "录进去", "存进去"],
        "acct": [
            "私卡",
            "个人账户",
            "我卡上",
            "我爱人的卡",
            "我微信",
            "G人账户",
            "我支付宝",
            "我亲戚账户",
        ],
        "offline": ["线下合同", "我们私下签个协议", "线下签就行", "不用录系统", "合同另签"],
        "wink": ["你懂的", "别声张", "😉", "别留记录", "聊天记录删了"],
        "own": ["团队自己攒", "朋友公司", "私人渠道", "自己找"],
        "hq": ["总行", "公司", "分行", "风控"],
        "rate": ["1分", "2分", "1.5分", "两分利"],
        "vx": ["VX", "私人微信", "薇信", "v", "个人号"],
        "pay": ["微信转账", "支付宝", "银行卡"],
    },
    "improper_inducement": {
        "t": [
            "{fy}这块我按{pct}给您，{wink}",
            "买了有{fy}，直接到你{wallet}",
            "这个月的{bill}我帮您交了，就当感谢您支持",
            "{buy}后送您{gift}，费用我来出",
            "{buy}就送{gift}，合同里不写",
            "{buy}{amt}，我私下{back}{pct}",
            "{fy}给您留着，{wink}",
            "您{buy}，{me}{back}一个{red}",
            "{buy}的话，{gift}我包了",
        ],
        "fy": ["fy", "返佣", "返点", "fan yong", "回扣", "返现", "佣金"],
        "wallet": ["微信零钱", "支付宝", "卡上", "红包里"],
        "bill": ["物业费", "电费", "话费", "停车费", "燃气费"],
        "buy": ["投保", "签单", "认购", "买满", "开户", "存进来", "转进来"],
        "gift": ["全家海南游一趟", "两瓶茅台", "一部iPhone", "京东卡", "一桶油", "金条", "购物卡"],
        "back": ["返您", "贴您", "补贴您", "给您"],
        "red": ["大红包", "红包", "现金", "心意"],
        "wink": ["别说出去", "够意思吧", "你懂的", "别声张", "😉"],
    },
    "suitability_evasion": {
        "t": [
            "{cp}我先替您{answer}了，您回头签字就行",
            "您先按{aggr}答，买完了我再帮您改回来",
            "{cp}的时候别说{truth}，就说{lie}",
            "{cp}那里全选{opt}，{pass}",
            "{sl}太麻烦，您先签个空白确认书，我后面补",
            "您是{cons}，不过这款{r}我可以{special}，没人查",
            "{cp}不够没关系，我用您的账号帮您{answer}",
            "{sl}时问你{q}，就说「{yes}」，其他别讲",
            "{sl}的时候照{script}念就好，别自己发挥",
            "等级不够，{cp}重新做一遍{pass}",
            "{cp}{answer}，{yes}就行",
        ],
        "cp": ["测评", "cp", "风险测评", "问卷", "风评", "适当性评估"],
        "answer": ["答好", "填好", "做好", "重新做一遍", "改一下", "点完"],
        "aggr": ["激进型", "进取型", "最高那档", "C5"],
        "truth": ["这是养老钱", "您没投资经验", "您退休了", "这是看病的钱", "您亏不起"],
        "lie": ["是闲钱", "有五年经验", "能接受亏损", "收入很高"],
        "opt": ["最后一个", "D", "最激进的", "分最高的"],
        "pass": ["稳过", "就能买了", "肯定过", "等级就够了"],
        "sl": ["双录", "录像", "双.录", "回访", "录音"],
        "cons": ["保守型", "稳健型", "C1", "谨慎型"],
        "r": ["R5", "R4", "高风险产品", "私募"],
        "special": ["特批给您", "给您绕过去", "特殊处理", "走个后门"],
        "q": ["懂不懂风险", "是否自愿", "有没有人承诺收益", "了不了解产品"],
        "yes": ["懂", "是", "没有", "了解", "都答是"],
        "script": ["卡片", "我给的稿子", "提示板", "我发您的"],
    },
    "account_custody": {
        "t": [
            "{code}收到没？发我一下，{fast}",
            "您忙的话{login}给我，我远程帮您{act}",
            "您那几只基金我已经帮您{done}了，回头看下就行",
            "{code}发我，系统要确认一下",
            "把{login}给我，我替您{act}",
            "{card}放我这，{fast}",
            "以后买卖我直接帮您{act}，您不用管",
            "我用您的手机帮您{act}，{code}我来输",
        ],
        "code": ["验证码", "yzm", "y z m", "动态码", "短信码", "交易密码", "支付密码", "U盾密码"],
        "login": ["登录信息", "APP的登录账号", "账号密码", "手机银行密码", "登录密码"],
        "act": ["赎回再买新的", "点确认", "操作", "调仓", "下单", "转出来"],
        "done": ["换掉", "全卖", "调仓", "赎回", "转成别的"],
        "fast": ["马上就办好了", "我帮您弄", "省得您跑", "我替您办", "方便操作"],
        "card": ["卡和U盾", "身份证和卡", "银行卡", "您的U盾"],
    },
    "insider_tip": {
        "t": [
            "{stock}这波一定到{target}，{go}",
            "朋友在{insider}，说{stock}要{up}",
            "{boss}私下说了，{news}，现在就是底部",
            "{stock}跌不下去了，{sure}{up}",
            "{nm}消息：{stock}要{news2}🤫",
            "{stock}下周要出政策，{boss}已经知道了",
            "{stock}{sure}{up}，{go}",
            "有主力在里面，{stock}拉到{target}是{sure}的事",
        ],
        "target": ["4000点", "30块", "翻倍", "新高", "50块"],
        "go": ["两融加满", "赶紧上车", "满仓干", "先埋伏", "别犹豫"],
        "insider": ["證監會", "证监会", "交易所", "那家公司", "基金公司", "券商研究所"],
        "up": ["起飞", "涨停", "反弹", "大涨", "拉升", "翻倍"],
        "boss": ["公司高层", "我们领导", "董秘", "内部人", "大股东"],
        "news": ["中报利润翻倍", "要重组", "要被收购", "有大单"],
        "news2": ["重组", "被收购", "注入资产", "拿大单"],
        "sure": ["百分之百", "肯定", "一定", "板上钉钉", "必然", "铁定"],
        "nm": ["nm", "内幕", "内部", "小道"],
    },
    "disparagement": {
        "t": [
            "{rival}的{staff}都是{bad}，{worse}",
            "{rival}随时会倒，{money}放那里不安全",
            "别信{rival}的人说的，{reason}，什么都敢说",
            "别去{rival}，他们{staff}{bad2}",
            "{rival}理财经理专门坑老人",
            "{rival}的理赔就是个无底洞",
            "{rival}快破产了，保单到时候都成废纸",
            "{rival}的产品🗑️🗑️，买了就亏",
            "{rival}理赔能拖就拖，还不如不买",
            "{rival}{bad3}，千万别去",
        ],
        "staff": ["经理", "投顾", "客户经理", "销售", "基金经理", "代理人"],
        "bad": ["关系户", "刚毕业的", "骗子", "外行", "新手"],
        "worse": ["水平很差", "根本不懂", "跟着只会亏", "啥也不会"],
        "money": ["钱", "存款", "养老钱"],
        "reason": ["他们考核压力大", "他们为了业绩", "他们就想卖货"],
        "bad2": ["素质太差了", "专门忽悠人", "都不专业", "不靠谱"],
        "bad3": ["快暴雷了", "风控形同虚设", "拆东墙补西墙", "早晚出事"],
    },
}

# Frames that make a violating concept clean: refused, warned against, quoted, asked.
NEGATED_FRAMES: list[str] = [
    "如果有人跟您说“{core}”，请直接报警",
    "市面上说“{core}”的多半有问题，请走正规渠道",
    "我不会跟您说“{core}”这种话",
    "有人说{core}？千万别信",
    "监管不允许说“{core}”",
    "别信那些“{core}”的宣传",
    "客户问我能不能{core}，我说不行",
    "冒充我的人可能会说“{core}”，请警惕",
]

CLEAN: Slots = {
    "t": [
        "好的收到，{me}{when}给您回个电话",
        "{ack}，{me}整理下再发您",
        "您的{doc}快过期了，记得带新证来更新信息{end}",
        "您尾号{d4}的卡{when2}到期，新卡已经寄出了",
        "{ack}，我跟进下{case}进度再回复您",
        "我把问题报给后台了，{n}个工作日内给您答复",
        "我是{name}，以后您的业务由我对接",
        "{when}网点营业，您带身份证过来就行",
        "查到了，您的{prod2}{when2}{day}号到账第一笔",
        "退保金会原路退回您尾号{d4}的卡，{n}到{n2}个工作日",
        "{prod}的产品代码是{code}，您在APP里搜一下就有",
        "养老金账户缴存的钱可以按规定抵扣个税，上限每年1.2万",
        "{prod}业绩比较基准{pct}，不代表实际收益",
        "{prod}过去{n}年年化{pct}，历史业绩不代表未来",
        "{prod}不保本，{risk}",
        "{prod}是{r}产品，适合{fit}的客户",
        "想了解下您最多能承受多大的亏损{q}",
        "测评请您本人按真实情况做{end}",
        "双录是监管要求，全程录像，您如实回答就好",
        "密码和验证码不要告诉任何人，包括我",
        "认购款请通过本行APP支付，不要转给任何个人",
        "这个得您本人在手机上操作，我在电话里一步步教您",
        "所有业务都要走行里系统，不存在线下协议",
        "我们不能收礼，您的心意我领了",
        "{rival2}的产品我不方便评价，您可以对比说明书",
        "市场有波动，没人能保证{stock2}涨跌",
        "借来的钱别拿去投资，亏了压力太大",
        "{prod}的费率是{rate}，申购费打一折",
        "以后有事就在这个企业微信上找我",
        "{ack}{emoji}",
        "{greet}，{name2}，{when}有空来网点坐坐",
        "{prod}募集期到{when2}，您考虑好了告诉我",
        "存款保险保障50万以内的本息，理财不在范围内",
        "{prod}有本金损失的可能，合同里也没有刚性兑付",
        "{prod}的合同保证利率是{pct}，分红不确定",
        "亏损我没法替您承担，收益也没人能承诺",
        "定投不是稳赚，只是把买入成本摊平",
        "您上次问的{case}，已经帮您提交了",
        "{when}{stock2}跌了{pct}，您的持仓回撤不大，先别慌",
        "{prod}起购{amt}，{when2}开放申购",
        "您的风险等级是{cons}，这款{r}不适合您",
        "资料我发您邮箱了，您看下有问题随时问",
        "{prod}可以随时赎回，{n}个工作日到账",
    ],
    "ack": ["好的", "嗯嗯 了解了👌", "收到", "明白", "好嘞", "好的好的", "没问题", "OK的"],
    "when": ["下午", "明天上午", "一会儿", "晚点", "明天十点", "周一"],
    "when2": ["下月", "下周", "月底", "15号", "明年3月"],
    "day": ["15", "20", "1", "28"],
    "doc": ["身份证", "护照", "营业执照", "签证"],
    "d4": ["0021", "8890", "1234", "5566", "7003"],
    "case": ["理赔", "投诉", "挂失", "开户", "变更"],
    "n": ["2", "3", "5", "7"],
    "n2": ["5", "7", "10"],
    "name": ["小刘", "小王", "小陈", "老张"],
    "name2": ["王姐", "李总", "张哥", "刘阿姨"],
    "greet": ["早上好", "中秋快乐", "新年好", "您好"],
    "prod2": ["年金", "分红", "理财收益", "生存金"],
    "code": ["9K21023", "510300", "000001", "C12345"],
    "risk": ["净值会有波动", "请您知悉风险", "可能亏损本金", "请仔细阅读说明书"],
    "r": ["R2", "R3", "R4", "中风险", "低风险"],
    "fit": ["稳健型及以上", "平衡型以上", "有投资经验", "能承受波动"],
    "q": ["？", "", "，您说说"],
    "rival2": ["别家", "其他银行", "同业", "那家券商"],
    "stock2": ["大盘", "这只基金", "股市", "明天"],
    "rate": ["0.15%", "1.2%", "0.5%"],
    "cons": ["保守型", "稳健型", "谨慎型"],
}

CUSTOMER: dict[str, Slots] = {
    "redemption_intent": {
        "t": [
            "{prod}全部{out}",
            "{prod}我想{out}",
            "把{prod}{out}，{later}",
            "{prod}能不能提前{out}",
        ],
        "prod": ["卡里的理财", "那个基金", "这份保单", "那笔定期", "年金险", "账户里的钱"],
        "out": ["赎回", "转出", "退保", "取出来", "卖掉", "销户"],
        "later": ["办好了告诉我", "急用钱", "尽快", "今天能到账吗"],
    },
    "claim_service": {
        "t": ["{what}", "{what}，{ask}", "赔款{pay}", "{doc}发你了，{ask}"],
        "what": ["住院的单据都齐了", "我爸摔了一跤住院了", "车被追尾了", "孩子发烧住了三天院"],
        "ask": ["能赔多少", "怎么报销", "理赔要多久", "查收下"],
        "pay": ["到账了，谢谢", "打到这张卡吧", "什么时候能到", "怎么还没下来"],
        "doc": ["发票照片", "病历", "诊断证明", "事故认定书"],
    },
    "risk_assessment": {
        "t": [
            "测评题里{q}",
            "我能承受的亏损大概{pct}以内，{type}",
            "{q}，{type}",
            "我的风险等级{st}",
        ],
        "q": ["投资经验怎么选", "收入那题怎么填", "最后一题什么意思", "亏损那题选哪个"],
        "pct": ["10%", "5%", "20%", "一成"],
        "type": ["这算什么类型", "算保守还是稳健", "能测到几级"],
        "st": ["是不是过期了", "是几级", "能不能重新评", "怎么变低了"],
    },
    "purchase_intent": {
        "t": ["帮我{reg}{prod}", "{prod}我{buy}{amt}", "{amt}{buy}{prod}", "{prod}给我留{amt}额度"],
        "reg": ["登记预约", "预约", "下单", "占个额度买"],
        "prod": ["那款理财", "这期", "那个年金", "积存金", "大额存单", "那只基金"],
        "buy": ["想买", "要买", "准备投", "定了，买"],
    },
    "chitchat": {
        "t": [
            "{ack}{emoji}",
            "{ack}，{thanks}",
            "{greet}{emoji}",
            "{weather}",
            "{ack}，{later}",
            "哈哈{ack}",
            "{thanks}{emoji}",
            "{life}",
        ],
        "ack": ["好的", "嗯嗯", "收到", "OK", "知道了", "行", "好嘞", "明白了", "好滴"],
        "thanks": ["谢谢", "辛苦了", "麻烦你了", "太感谢了", "谢啦"],
        "greet": ["早上好", "晚上好", "节日快乐", "新年快乐", "中秋快乐", "在吗"],
        "weather": ["今天好热啊", "最近降温了，你也注意身体", "下雨了，出门记得带伞"],
        "later": ["回头聊", "改天请你喝茶", "我先忙了", "晚点再说", "等我消息"],
        "life": ["我在带孩子，晚点回你", "刚下班，累死了", "周末去爬山了", "孩子考上大学了，开心"],
    },
    "complaint": {
        "t": [
            "{what}，{angry}",
            "你们{who}{bad}，{angry}",
            "{what}，我要投诉",
            "{what}，太过分了",
            "为什么{what}？{angry}",
            "{who}{bad}，我不满意",
        ],
        "what": [
            "乱扣我手续费",
            "转账三天还没到账",
            "电话一直打不通",
            "APP又崩了",
            "卖给我的理财亏了20%，当时说没风险",
            "说好的收益根本没有",
            "办个业务排了两个小时",
            "一直给我打营销电话",
            "没经过我同意就扣款了",
        ],
        "who": ["客服", "客户经理", "网点的人", "你们经理", "柜员"],
        "bad": ["态度太差", "根本不管", "推来推去", "骗人", "爱答不理"],
        "angry": ["我要投诉", "我要找你们领导", "太气人了", "我要去银保监投诉", "给个说法"],
    },
    "product_inquiry": {
        "t": [
            "{prod}{ask}",
            "{prod}{ask}？",
            "有没有{kind}推荐",
            "{prod}和{prod2}哪个好",
            "现在买{kind}合适吗",
            "{prod}{ask}，{thanks}",
        ],
        "prod": [
            "这款理财",
            "这只基金",
            "那个年金险",
            "增额寿",
            "这个产品",
            "结构性存款",
            "大额存单",
        ],
        "prod2": ["定期", "国债", "余额宝", "那个基金"],
        "ask": [
            "收益怎么样",
            "风险大吗",
            "起购多少",
            "期限多长",
            "能随时取吗",
            "是保本的吗",
            "利率多少",
            "费率多少",
            "适合老人吗",
            "历史业绩怎么样",
            "什么时候开放申购",
        ],
        "kind": ["稳一点的理财", "短期的产品", "养老的产品", "好的基金", "低风险的"],
        "thanks": ["谢谢", "麻烦介绍下", "帮我看看"],
    },
    "account_service": {
        "t": [
            "{thing}{issue}",
            "{thing}{issue}，怎么办",
            "怎么{op}",
            "我想{op}",
        ],
        "thing": ["手机银行", "APP", "银行卡", "网银", "U盾", "账户"],
        "issue": ["登不上了", "被锁了", "收不到验证码", "密码忘了", "提示异常"],
        "op": [
            "改交易密码",
            "开通网银",
            "挂失银行卡",
            "修改预留手机号",
            "设置转账限额",
            "激活社保卡",
        ],
    },
}

_EVADE_SEP = [".", " ", "·", "-", "*"]


def _expand(template: str, slots: Slots, rng: random.Random) -> str:
    def pick(m: re.Match[str]) -> str:
        key = m.group(1)
        options = slots.get(key) or S.get(key)
        if options is None:
            return m.group(0)
        return rng.choice(options)

    # Two passes: slot values may themselves contain shared slots ({me}, {you}).
    out = re.sub(r"\{(\w+)\}", pick, template)
    return re.sub(r"\{(\w+)\}", pick, out)


_WINKS = ("悄悄", "私下", "你懂的", "别声张", "😉", "🤫")


def _decorate(text: str, rng: random.Random, *, evade: bool) -> str:
    # Clean lines never get the conspiratorial hedges: on a real line they *are* signal.
    opens = S["open"] if evade else [o for o in S["open"] if not o.startswith(_WINKS)]
    ends = S["end"] if evade else [e for e in S["end"] if not any(w in e for w in _WINKS)]
    emoji = S["emoji"] if evade else [e for e in S["emoji"] if e not in _WINKS]
    text = rng.choice(opens) + text + rng.choice(ends) + rng.choice(emoji)
    if evade and rng.random() < 0.15:
        # Separators inside a short run: 保.本, 双 录 — the evasion the normaliser folds.
        i = rng.randrange(max(1, len(text) - 2))
        sep = rng.choice(_EVADE_SEP)
        text = text[:i] + sep.join(text[i : i + 3]) + text[i + 3 :]
    return text


def violation_lines(rng: random.Random, per_category: int) -> list[tuple[str, str]]:
    """(text, category) pairs, ``per_category`` for each category."""
    out: list[tuple[str, str]] = []
    for category, slots in V.items():
        for _ in range(per_category):
            core = _expand(rng.choice(slots["t"]), slots, rng)
            out.append((_decorate(core, rng, evade=True), category))
    return out


def clean_lines(rng: random.Random, n_service: int, n_negated: int) -> list[str]:
    """Service chat plus the violating concepts refused, warned against or quoted."""
    out = [
        _decorate(_expand(rng.choice(CLEAN["t"]), CLEAN, rng), rng, evade=False)
        for _ in range(n_service)
    ]
    cats = list(V)
    for _ in range(n_negated):
        slots = V[rng.choice(cats)]
        core = _expand(rng.choice(slots["t"]), slots, rng).rstrip("，。！")
        out.append(_expand(rng.choice(NEGATED_FRAMES), {"core": [core]}, rng))
    return out


# Numbers that carry no intent (order numbers, hotlines, amounts, card tails): without
# them the model read any digit run as account_service.
NUMBER_ASIDES: list[str] = [
    "订单号20240611{d}，",
    "尾号{t}那张卡，",
    "{amt}那笔，",
    "打了400-{t}-{t}好几次，",
    "我微信号是{w}，",
    "上个月{amt}买的那个，",
    "单号{d}，",
    "保单号P{d}，",
]


def _aside(rng: random.Random) -> str:
    return _expand(
        rng.choice(NUMBER_ASIDES),
        {
            "d": [str(rng.randrange(10**5, 10**7))],
            "t": [str(rng.randrange(1000, 9999))],
            "w": ["wxid_88a", "lily_2020", "hzz777"],
        },
        rng,
    )


def customer_lines(rng: random.Random, per_intent: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pick: Callable[[list[str]], str] = rng.choice
    for intent, slots in CUSTOMER.items():
        for _ in range(per_intent):
            text = _expand(pick(slots["t"]), slots, rng)
            if rng.random() < 0.25:
                text = _aside(rng) + text
            out.append((text + pick(["", "", "。", "！", "？", "~", "😂", "🙏"]), intent))
    return out
